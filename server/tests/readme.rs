//! The server section of README.md against the real binary: every `--flag`
//! it names is one `partseal-server --help` lists, and its table of flags
//! gives each flag of `--help` with the same environment variable and
//! default. (Only the server section: the engine's `partseal` command has
//! its own section.)

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
const SECTION: &str = "## The server";

/// The text of README.md from the server heading to the next `## ` heading.
fn server_section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md is readable");
    let start = readme
        .lines()
        .position(|l| l.trim_end() == SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} heading"));
    readme
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `--name` token of `text`, with the longest name it spells.
fn flag_tokens(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let after = &rest[i + 2..];
        let name: String = after.chars().take_while(|&c| is_name(c)).collect();
        let preceded_by_name = rest[..i].chars().next_back().is_some_and(is_name);
        if !preceded_by_name && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(format!("--{}", name.trim_end_matches('-')));
        }
        rest = &after[name.len()..];
    }
    out
}

/// A flag as `--help` describes it.
#[derive(Debug, Default, PartialEq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
}

/// `partseal-server --help`, parsed: flag -> its variable and default.
fn help() -> BTreeMap<String, Flag> {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .expect("run partseal-server --help");
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let flag = t
            .strip_prefix("-h, ")
            .or_else(|| t.strip_prefix("-V, "))
            .unwrap_or(t);
        if line.starts_with("  ") && flag.starts_with("--") {
            let name = flag
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            flags.insert(name.clone(), Flag::default());
            current = Some(name);
            continue;
        }
        let Some(f) = current.as_ref().and_then(|c| flags.get_mut(c)) else {
            continue;
        };
        let bracket = |key: &str| {
            let i = t.find(key)? + key.len();
            let end = t[i..].find(']')?;
            Some(t[i..i + end].to_owned())
        };
        if let Some(env) = bracket("[env: ") {
            f.env = Some(env.trim_end_matches('=').to_owned());
        }
        if let Some(d) = bracket("[default: ") {
            f.default = Some(d);
        }
    }
    assert!(
        flags.len() > 10,
        "too few flags parsed from --help:\n{text}"
    );
    flags
}

#[test]
fn every_flag_in_the_readme_is_accepted_by_the_binary() {
    let named = flag_tokens(&server_section());
    assert!(
        named.len() > 10,
        "the server section names few flags: {named:?}"
    );
    let help = help();
    let unknown: Vec<_> = named.iter().filter(|f| !help.contains_key(*f)).collect();
    assert!(
        unknown.is_empty(),
        "README.md names flags partseal-server does not have: {unknown:?}\n(it has {:?})",
        help.keys().collect::<Vec<_>>()
    );
}

#[test]
fn readme_flag_table_matches_help() {
    let section = server_section();
    // Rows of the flag table: | `--flag` | `ENV` | `default` | what |
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let cell = |i: usize| {
            cells
                .get(i)
                .map(|c| c.trim_matches('`').to_owned())
                .unwrap_or_default()
        };
        let row = Flag {
            env: Some(cell(2)).filter(|e| !e.is_empty()),
            default: Some(cell(3)).filter(|d| !d.is_empty()),
        };
        assert!(
            table.insert(cell(1), row).is_none(),
            "{} twice in the table",
            cell(1)
        );
    }
    let mut help = help();
    // Clap's own; the README names them in prose.
    help.remove("--help");
    help.remove("--version");
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        help.keys().collect::<Vec<_>>(),
        "the README's flag table and --help list different flags"
    );
    for (flag, documented) in &help {
        assert_eq!(&table[flag], documented, "{flag}: README vs --help");
    }
}

#[test]
fn flag_tokens_are_whole_names() {
    let t = flag_tokens("`--body-timeout-secs` (x), --url-ttl, a--b, `--listen`; --, --X");
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        ["--body-timeout-secs", "--listen", "--url-ttl"]
    );
}
