//! `contrib/partseal-server.service`: `systemd-analyze verify` accepts it
//! (with the path of the binary just built), its sandbox is the hardened
//! one, its stop timeout outlasts the shutdown grace, and the flags it
//! passes are flags of the binary. Skips the verify step, saying so, where
//! `systemd-analyze` is absent.

use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
const UNIT: &str = include_str!("../../contrib/partseal-server.service");
const INSTALLED: &str = "/usr/local/bin/partseal-server";

/// `Key=value` lines of the unit (the last of repeated keys wins, as for
/// the settings checked here).
fn settings() -> BTreeMap<String, String> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_unit_is_sandboxed_and_stops_gracefully() {
    let s = settings();
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "partseal"),
        ("DynamicUser", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/partseal"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(s.get(key).map(String::as_str), Some(want), "{key}");
    }
    let exec = &s["ExecStart"];
    assert!(exec.contains("--data /var/lib/partseal"), "{exec}");
    // The stop timeout outlasts the grace the server gives requests.
    let timeout: u64 = s["TimeoutStopSec"].parse().unwrap();
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let grace_default = help
        .split("--shutdown-grace-secs")
        .nth(1)
        .and_then(|t| t.split("[default: ").nth(1))
        .and_then(|t| t.split(']').next())
        .and_then(|t| t.parse::<u64>().ok())
        .expect("--help gives the default grace");
    assert!(timeout > grace_default, "{timeout} <= {grace_default}");
    // Every flag it passes is one of the binary's.
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "{flag} is no flag of partseal-server");
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: systemd-analyze is not installed; the unit was not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("partseal-server.service");
    // verify wants the ExecStart binary to exist: the one just built.
    std::fs::write(&unit, UNIT.replace(INSTALLED, BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("partseal-server.service"),
        "warnings about the unit: {stderr}"
    );
}
