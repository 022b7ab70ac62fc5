-- partseal cluster schema, version 1.
--
-- Every record, claim and hash checkpoint lives here; part and file bytes
-- live in the object store under the keys these rows name.

-- Settings every node shares (the key that signs upload URLs).
CREATE TABLE settings (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- One row per upload, kept after commit so that a repeated complete answers
-- with the committed result.
CREATE TABLE uploads (
    id            text PRIMARY KEY,
    owner         text NOT NULL,
    -- open | completing | committed | aborted
    state         text NOT NULL,
    -- unset | chain | stream
    mode          text NOT NULL,
    length        bigint,
    sha256        bytea,
    md5           bytea,
    part_count    integer,
    labels        jsonb NOT NULL,
    s3_key        text NOT NULL,
    s3_upload_id  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_activity timestamptz NOT NULL DEFAULT now(),
    -- The claim of a complete: a fencing number raised by every claim, the
    -- node holding it and until when.
    claim_fence   bigint NOT NULL DEFAULT 0,
    claim_node    text,
    claim_until   timestamptz,
    -- Stream mode: parts 1..=ckpt_through are folded into the checkpoint
    -- stored on part ckpt_through's row.
    ckpt_through  integer NOT NULL DEFAULT 0,
    note          text
);
CREATE INDEX uploads_idle ON uploads (last_activity) WHERE state IN ('open', 'completing');
CREATE INDEX uploads_s3_upload ON uploads (s3_upload_id);

-- Declared parts.
CREATE TABLE plan (
    upload_id  text NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    n          integer NOT NULL,
    size       bigint NOT NULL,
    part_offset bigint,
    hash_ctx   bytea,
    PRIMARY KEY (upload_id, n)
);

-- Acknowledged parts: a row exists only once the object store stored the
-- bytes it describes.
CREATE TABLE parts (
    upload_id      text NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    n              integer NOT NULL,
    len            bigint NOT NULL,
    -- The part's fingerprint (its ETag towards clients).
    sha256         bytea NOT NULL,
    -- The object store's ETag of the part.
    etag           text NOT NULL,
    -- Chain mode: the SHA-256 state after the part, and the digest if it is
    -- the last.
    state_out      bytea,
    digest_if_last bytea,
    -- Stream mode: the hash states after parts 1..=n, when folded in order.
    ckpt_sha       bytea,
    ckpt_md5       bytea,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, n)
);

-- Committed files. Several may share one object (flash upload).
CREATE TABLE files (
    id           text PRIMARY KEY,
    owner        text NOT NULL,
    sha256       bytea NOT NULL,
    length       bigint NOT NULL,
    md5          bytea,
    parts        integer NOT NULL,
    s3_key       text NOT NULL,
    labels       jsonb NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_flash ON files (owner, sha256, length);
CREATE INDEX files_key ON files (s3_key);
