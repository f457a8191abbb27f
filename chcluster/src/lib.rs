//! ClickHouse cluster mode, shared by the collector's and the analyzer's migration runners.
//!
//! Migrations are written once, for a single server, in a few fixed forms (see
//! `/work/notes/CONTRACTS.md`, contract 3, and the migration files):
//!
//! - `CREATE TABLE IF NOT EXISTS db.t (columns) ENGINE = <Family>MergeTree[(params)] <clauses>`
//! - `CREATE TABLE IF NOT EXISTS db.t AS db.other` (a table shaped like an earlier one)
//! - `CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv TO db.target AS SELECT .. FROM db.source ..`
//! - `INSERT INTO db.t SELECT ..` and `DROP TABLE IF EXISTS db.t`
//!
//! With `--clickhouse-cluster NAME`, [`ClusterSchema`] renders each statement for the cluster
//! named `NAME` in the servers' `remote_servers`:
//!
//! - a table `t` becomes `t_local` on every server (`ON CLUSTER`), engine
//!   `Replicated<Family>MergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}', params)`
//!   (the `{shard}`/`{replica}` macros come from each server's `<macros>`), plus a `Distributed`
//!   table under the original name `t`, so every query and insert of the product is unchanged;
//! - a materialized view reads and writes the *local* tables: each shard aggregates its own
//!   rows into its own replicated rollup, and readers merge the states of all shards through
//!   the Distributed table (states merge, so a row counts once wherever it lives);
//! - `INSERT .. SELECT` runs through the Distributed tables (the session must insert
//!   synchronously, see [`SESSION_SETTINGS`]);
//! - bookkeeping tables (which migrations ran) are replicated to every server of the cluster
//!   ([`ClusterSchema::render_everywhere`]), so any process on any server reads the same state.
//!
//! A statement in any other form is refused with [`RenderError`] instead of being run
//! unchanged on one server: a new migration that the renderer cannot handle fails loudly (each
//! runner has a unit test rendering every migration file).

use std::collections::BTreeMap;

/// Settings every cluster-mode session sends with each query (the `clickhouse` crate's
/// `with_setting`). All exist on 18.16 and on current releases (`insert_distributed_sync` is an
/// alias of `distributed_foreground_insert` there).
///
/// - `insert_distributed_sync = 1`: an INSERT into a Distributed table returns only once every
///   shard stored its part, so an acknowledged Push is durably stored (and visible) in the
///   cluster, and a failed shard fails the insert (the sender keeps its data).
/// - `load_balancing = in_order`, `prefer_localhost_replica = 0`: every process writes to and
///   reads from the first healthy replica of each shard in `remote_servers` order, whichever
///   server it is connected to. Reads of one process therefore see the writes of every other
///   process at once (the event-level dedup lookups and the ledger's recovery depend on that),
///   instead of hitting a replica that has not fetched the part yet. The second replica takes
///   over when the first is down.
/// - `distributed_product_mode = global`: an `IN (subquery)` over a Distributed table inside a
///   query over a Distributed table is run once and its result shipped to the shards (18.16
///   refuses such queries by default).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("insert_distributed_sync", "1"),
    ("load_balancing", "in_order"),
    ("prefer_localhost_replica", "0"),
    ("distributed_product_mode", "global"),
];

/// Session setting for `ON CLUSTER` DDL: seconds to wait for every server to run a statement.
pub const DDL_TIMEOUT_SECS: u64 = 180;

/// Suffix of the replicated local table behind a Distributed table.
pub const LOCAL_SUFFIX: &str = "_local";

/// Why a statement could not be rendered for the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render for the cluster: {reason}; statement: {statement}")]
pub struct RenderError {
    /// What the renderer expected.
    pub reason: String,
    /// The first 120 characters of the statement.
    pub statement: String,
}

fn error(statement: &str, reason: impl Into<String>) -> RenderError {
    RenderError {
        reason: reason.into(),
        statement: statement.chars().take(120).collect(),
    }
}

/// Whether `name` can be formatted into SQL as an identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 64 characters (database and cluster names; shared with the collector's checks).
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name.len() <= 64
        }
        None => false,
    }
}

/// Checks a cluster name before it is formatted into SQL (names in `remote_servers` are XML
/// element names; we accept the identifier subset, [`is_identifier`]).
pub fn validate_cluster_name(name: &str) -> Result<(), String> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a cluster name ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)"
        ))
    }
}

/// A table definition seen in a `CREATE TABLE` statement.
#[derive(Debug, Clone)]
struct TableDef {
    /// `(columns)` including the parentheses.
    columns: String,
    /// E.g. `AggregatingMergeTree`.
    family: String,
    /// The engine's parameters without parentheses (often empty).
    params: String,
    /// Everything after the engine: `PARTITION BY .. ORDER BY .. SETTINGS ..`.
    clauses: String,
}

impl TableDef {
    /// The Distributed table's sharding key.
    ///
    /// - A table whose engine replaces or collapses rows (`Replacing`, `Collapsing`,
    ///   `VersionedCollapsing`): its sorting key, hashed. Such an engine only merges rows of
    ///   one part set, i.e. of one shard; every version of a key must land on the same shard
    ///   for the newest to replace the others (`rollup_closed_series`, written at run time by
    ///   the analyzer's finalizer through the Distributed table).
    /// - Otherwise a device's rows together on one shard (so a tenant's device-level questions
    ///   are answered shard-locally and a device's events stay in order on one replica set).
    /// - Rows without a device (rollups, filled per shard by views; the few rows a backfill
    ///   inserts through the Distributed table merge at read time) spread at random.
    fn sharding_key(&self) -> String {
        let has = |col: &str| {
            self.columns.lines().flat_map(|l| l.split(',')).any(|c| {
                c.trim_start()
                    .trim_start_matches('(')
                    .starts_with(&format!("{col} "))
            })
        };
        if ["Replacing", "Collapsing", "VersionedCollapsing"]
            .iter()
            .any(|f| self.family == format!("{f}MergeTree"))
            && let Some(key) = self.sorting_key()
        {
            format!("cityHash64({key})")
        } else if has("tenant") && has("device_id") {
            "cityHash64(tenant, device_id)".to_owned()
        } else {
            "rand()".to_owned()
        }
    }

    /// The `ORDER BY` expression list, without its parentheses (`None` when absent or empty).
    fn sorting_key(&self) -> Option<String> {
        let at = self.clauses.to_ascii_uppercase().find("ORDER BY")?;
        let rest = self.clauses[at + "ORDER BY".len()..].trim_start();
        let key = if rest.starts_with('(') {
            let close = matching_paren(rest)?;
            &rest[1..close]
        } else {
            rest.split_whitespace().next()?
        };
        let key = key.trim();
        (!key.is_empty() && key != "tuple()").then(|| key.to_owned())
    }
}

/// Renders single-node migration statements for one cluster and database, remembering the
/// tables it has seen (a later `AS db.t`, view or drop refers to them).
#[derive(Debug, Clone)]
pub struct ClusterSchema {
    cluster: String,
    db: String,
    tables: BTreeMap<String, TableDef>,
}

impl ClusterSchema {
    /// `cluster` and `db` must be validated identifiers ([`validate_cluster_name`]).
    pub fn new(cluster: &str, db: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            db: db.to_owned(),
            tables: BTreeMap::new(),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `CREATE DATABASE IF NOT EXISTS db ON CLUSTER c`.
    pub fn create_database(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
            self.db, self.cluster
        )
    }

    /// Whether `name` is a table this renderer turned into local + Distributed.
    pub fn is_distributed(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// Renders one statement (placeholders already filled) into the statements to run, in
    /// order.
    pub fn render(&mut self, statement: &str) -> Result<Vec<String>, RenderError> {
        let s = statement.trim();
        let upper = s.to_ascii_uppercase();
        if upper.starts_with("CREATE TABLE IF NOT EXISTS ") {
            self.render_table(s)
        } else if upper.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            self.render_view(s).map(|v| vec![v])
        } else if upper.starts_with("INSERT INTO ") {
            let (name, _) = self.qualified_name(s, "INSERT INTO ".len())?;
            if !self.is_distributed(&name) {
                return Err(error(s, format!("INSERT into unknown table {name}")));
            }
            Ok(vec![s.to_owned()])
        } else if upper.starts_with("DROP TABLE IF EXISTS ") {
            let (name, rest) = self.qualified_name(s, "DROP TABLE IF EXISTS ".len())?;
            if !rest.trim().is_empty() {
                return Err(error(
                    s,
                    "unexpected text after DROP TABLE IF EXISTS db.name",
                ));
            }
            Ok(self.drop_table(&name))
        } else {
            Err(error(
                s,
                "expected CREATE TABLE IF NOT EXISTS, CREATE MATERIALIZED VIEW IF NOT EXISTS, \
                 INSERT INTO or DROP TABLE IF EXISTS",
            ))
        }
    }

    /// `DROP TABLE IF EXISTS` of a table and of its local table, on every server.
    pub fn drop_table(&self, name: &str) -> Vec<String> {
        vec![
            format!(
                "DROP TABLE IF EXISTS {}.{name} ON CLUSTER {}",
                self.db, self.cluster
            ),
            format!(
                "DROP TABLE IF EXISTS {}.{name}{LOCAL_SUFFIX} ON CLUSTER {}",
                self.db, self.cluster
            ),
        ]
    }

    /// `DROP TABLE IF EXISTS` of a materialized view (18.16 drops views with DROP TABLE), on
    /// every server.
    pub fn drop_view(&self, name: &str) -> String {
        format!(
            "DROP TABLE IF EXISTS {}.{name} ON CLUSTER {}",
            self.db, self.cluster
        )
    }

    /// Renders a bookkeeping `CREATE TABLE IF NOT EXISTS db.t (..) ENGINE = MergeTree ..` as a
    /// table replicated to *every* server of the cluster (one Keeper path for all shards, the
    /// replica named `{shard}_{replica}`), without a Distributed table: each server's copy
    /// holds every row.
    pub fn render_everywhere(&self, statement: &str) -> Result<String, RenderError> {
        let s = statement.trim();
        let (name, def) = self.parse_create(s)?;
        let def = def.ok_or_else(|| error(s, "a bookkeeping table needs its own columns"))?;
        let path = format!("/clickhouse/tables/all/{}/{name}", self.db);
        Ok(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} {cols} ENGINE = {engine} {clauses}",
            db = self.db,
            c = self.cluster,
            cols = def.columns,
            engine = replicated_engine(&def, &path, "{shard}_{replica}"),
            clauses = def.clauses,
        ))
    }

    fn render_table(&mut self, s: &str) -> Result<Vec<String>, RenderError> {
        let (name, def) = self.parse_create(s)?;
        let def = match def {
            Some(def) => def,
            None => {
                // `AS db.other`: shaped like an earlier table of this renderer.
                let start = s.to_ascii_uppercase().find(" AS ").map(|i| i + 4);
                let start = start.ok_or_else(|| error(s, "expected AS db.table"))?;
                let (other, rest) = self.qualified_name(s, start)?;
                if !rest.trim().is_empty() {
                    return Err(error(s, "unexpected text after AS db.table"));
                }
                self.tables.get(&other).cloned().ok_or_else(|| {
                    error(
                        s,
                        format!("AS refers to {other}, not created by an earlier statement"),
                    )
                })?
            }
        };
        let local = format!("{name}{LOCAL_SUFFIX}");
        let path = format!("/clickhouse/tables/{{shard}}/{}/{local}", self.db);
        let out = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {c} {cols} ENGINE = {engine} {clauses}",
                db = self.db,
                c = self.cluster,
                cols = def.columns,
                engine = replicated_engine(&def, &path, "{replica}"),
                clauses = def.clauses,
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{local} \
                 ENGINE = Distributed({c}, {db}, {local}, {key})",
                db = self.db,
                c = self.cluster,
                key = def.sharding_key(),
            ),
        ];
        self.tables.insert(name, def);
        Ok(out)
    }

    /// Parses `CREATE TABLE IF NOT EXISTS db.name` followed by `(columns) ENGINE = ..` (returns
    /// the definition) or by `AS ..` (returns `None`).
    fn parse_create(&self, s: &str) -> Result<(String, Option<TableDef>), RenderError> {
        let (name, rest) = self.qualified_name(s, "CREATE TABLE IF NOT EXISTS ".len())?;
        let rest = rest.trim_start();
        if strip_keyword(rest, "AS").is_some() {
            return Ok((name, None));
        }
        if !rest.starts_with('(') {
            return Err(error(s, "expected (columns) or AS after the table name"));
        }
        let close = matching_paren(rest).ok_or_else(|| error(s, "unbalanced parentheses"))?;
        let columns = rest[..=close].to_owned();
        let after = rest[close + 1..].trim_start();
        let after_engine = strip_prefix_ci(after, "ENGINE")
            .map(str::trim_start)
            .and_then(|a| a.strip_prefix('='))
            .map(str::trim_start)
            .ok_or_else(|| error(s, "expected ENGINE = after the columns"))?;
        let family_len = after_engine
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after_engine.len());
        let family = after_engine[..family_len].to_owned();
        if !family.ends_with("MergeTree") || family.starts_with("Replicated") {
            return Err(error(
                s,
                format!("engine {family} is not a non-replicated MergeTree family engine"),
            ));
        }
        let mut tail = &after_engine[family_len..];
        let mut params = String::new();
        if tail.starts_with('(') {
            let close = matching_paren(tail).ok_or_else(|| error(s, "unbalanced parentheses"))?;
            params = tail[1..close].trim().to_owned();
            tail = &tail[close + 1..];
        }
        Ok((
            name,
            Some(TableDef {
                columns,
                family,
                params,
                clauses: tail.trim().to_owned(),
            }),
        ))
    }

    fn render_view(&self, s: &str) -> Result<String, RenderError> {
        let prefix = "CREATE MATERIALIZED VIEW IF NOT EXISTS ";
        let (name, rest) = self.qualified_name(s, prefix.len())?;
        let rest = rest.trim_start();
        let after_to = strip_keyword(rest, "TO")
            .ok_or_else(|| error(s, "a materialized view must write TO an explicit table"))?;
        let offset = s.len() - after_to.len();
        let (target, body) = self.qualified_name(s, offset)?;
        if !self.is_distributed(&target) {
            return Err(error(
                s,
                format!("view target {target} is not a known table"),
            ));
        }
        let body = body.trim_start();
        if strip_keyword(body, "AS").is_none() {
            return Err(error(s, "expected AS SELECT after the view's target"));
        }
        let body = self.localize(s, body)?;
        Ok(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {c} TO {db}.{target}{LOCAL_SUFFIX} {body}",
            db = self.db,
            c = self.cluster,
        ))
    }

    /// Replaces every `db.t` in a view's query by `db.t_local`; every table it names must be
    /// one of ours (a view reads the rows inserted into the local table of its own server).
    fn localize(&self, s: &str, body: &str) -> Result<String, RenderError> {
        let needle = format!("{}.", self.db);
        let mut out = String::with_capacity(body.len() + 32);
        let mut rest = body;
        while let Some(i) = rest.find(&needle) {
            let boundary = rest[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '.');
            let after = &rest[i + needle.len()..];
            let len = ident_len(after);
            out.push_str(&rest[..i + needle.len()]);
            if boundary {
                let table = &after[..len];
                if !self.is_distributed(table) {
                    return Err(error(s, format!("view reads {table}, not a known table")));
                }
                out.push_str(table);
                out.push_str(LOCAL_SUFFIX);
            } else {
                out.push_str(&after[..len]);
            }
            rest = &after[len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Reads `db.name` at byte `start` of `s`; returns the name and the rest of the statement.
    fn qualified_name<'a>(
        &self,
        s: &'a str,
        start: usize,
    ) -> Result<(String, &'a str), RenderError> {
        let rest = s.get(start..).unwrap_or_default().trim_start();
        let after_db = rest
            .strip_prefix(self.db.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(|| error(s, format!("expected a name qualified by {}.", self.db)))?;
        let len = ident_len(after_db);
        if len == 0 {
            return Err(error(s, "expected a table name"));
        }
        Ok((after_db[..len].to_owned(), &after_db[len..]))
    }
}

fn replicated_engine(def: &TableDef, path: &str, replica: &str) -> String {
    let mut args = format!("'{path}', '{replica}'");
    if !def.params.is_empty() {
        args.push_str(", ");
        args.push_str(&def.params);
    }
    format!("Replicated{}({args})", def.family)
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(s.len())
}

/// `s` after the keyword `word` (any case) and the whitespace that must follow it.
fn strip_keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = strip_prefix_ci(s, word)?;
    rest.starts_with(char::is_whitespace)
        .then(|| rest.trim_start())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Index of the `)` closing the `(` at the start of `s`, skipping quoted strings.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '\'') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' => quoted = true,
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "CREATE TABLE IF NOT EXISTS fp.events\n(\n    tenant String,\n    device_id String,\n    note String DEFAULT 'a)b',\n    attributes Nested(key String, value String)\n)\nENGINE = MergeTree\nPARTITION BY toYYYYMMDD(ts)\nORDER BY (tenant, ts)";

    #[test]
    fn a_table_becomes_replicated_local_plus_distributed() {
        let mut r = ClusterSchema::new("fp_cluster", "fp");
        let out = r.render(RAW).unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS fp.events_local ON CLUSTER fp_cluster (\n    tenant String,"),
            "{}",
            out[0]
        );
        assert!(out[0].contains("note String DEFAULT 'a)b'"), "{}", out[0]);
        assert!(
            out[0].ends_with(
                ") ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/fp/events_local', '{replica}') PARTITION BY toYYYYMMDD(ts)\nORDER BY (tenant, ts)"
            ),
            "{}",
            out[0]
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS fp.events ON CLUSTER fp_cluster AS fp.events_local \
             ENGINE = Distributed(fp_cluster, fp, events_local, cityHash64(tenant, device_id))"
        );
    }

    #[test]
    fn engine_parameters_follow_the_keeper_path_and_copies_get_their_own_path() {
        let mut r = ClusterSchema::new("c", "fp");
        let out = r
            .render("CREATE TABLE IF NOT EXISTS fp.dict (sig UInt64, v UInt32) ENGINE = ReplacingMergeTree(v) ORDER BY sig")
            .unwrap();
        assert!(
            out[0].contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fp/dict_local', '{replica}', v) ORDER BY sig"
            ),
            "{}",
            out[0]
        );
        assert!(out[1].ends_with("Distributed(c, fp, dict_local, cityHash64(sig))"));
        let copy = r
            .render("CREATE TABLE IF NOT EXISTS fp.staging AS fp.dict")
            .unwrap();
        assert!(
            copy[0].starts_with("CREATE TABLE IF NOT EXISTS fp.staging_local ON CLUSTER c (sig UInt64, v UInt32) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fp/staging_local', '{replica}', v)"),
            "{}",
            copy[0]
        );
        assert!(copy[1].contains("Distributed(c, fp, staging_local, cityHash64(sig))"));
    }

    #[test]
    fn replacing_tables_shard_by_their_sorting_key() {
        // Every version of one bucket must reach the same shard for the newest to replace the
        // others (the analyzer's finalizer writes these rows through the Distributed table).
        let mut r = ClusterSchema::new("c", "fp");
        let out = r
            .render(
                "CREATE TABLE IF NOT EXISTS fp.closed\n(\n    width UInt32,\n    tenant String,\n    \
                 bucket DateTime('UTC'),\n    version UInt32\n)\nENGINE = ReplacingMergeTree(version)\n\
                 PARTITION BY toYYYYMM(bucket)\nORDER BY (width, tenant, bucket)",
            )
            .unwrap();
        assert!(
            out[1].ends_with("Distributed(c, fp, closed_local, cityHash64(width, tenant, bucket))"),
            "{}",
            out[1]
        );
        // A replacing table with device rows still shards by its sorting key.
        let out = r
            .render("CREATE TABLE IF NOT EXISTS fp.latest (tenant String, device_id String, v UInt32) ENGINE = ReplacingMergeTree(v) ORDER BY (tenant, device_id)")
            .unwrap();
        assert!(
            out[1].ends_with("cityHash64(tenant, device_id))"),
            "{}",
            out[1]
        );
        // Aggregating rollups spread at random (filled per shard by views).
        let out = r
            .render("CREATE TABLE IF NOT EXISTS fp.roll (tenant String, n AggregateFunction(count)) ENGINE = AggregatingMergeTree ORDER BY tenant")
            .unwrap();
        assert!(out[1].ends_with("rand())"), "{}", out[1]);
    }

    #[test]
    fn views_read_and_write_local_tables() {
        let mut r = ClusterSchema::new("c", "fp");
        r.render(RAW).unwrap();
        r.render("CREATE TABLE IF NOT EXISTS fp.roll (tenant String, n AggregateFunction(count)) ENGINE = AggregatingMergeTree ORDER BY tenant SETTINGS index_granularity = 256")
            .unwrap();
        let out = r
            .render("CREATE MATERIALIZED VIEW IF NOT EXISTS fp.roll_mv TO fp.roll AS\nSELECT tenant, countState() AS n\nFROM fp.events\nWHERE x.fp.events = 1 GROUP BY tenant")
            .unwrap();
        assert_eq!(
            out,
            vec![
                "CREATE MATERIALIZED VIEW IF NOT EXISTS fp.roll_mv ON CLUSTER c TO fp.roll_local AS\nSELECT tenant, countState() AS n\nFROM fp.events_local\nWHERE x.fp.events = 1 GROUP BY tenant"
            ]
        );
        // A view over a table the renderer does not know is refused, not run on one server.
        let err = r
            .render(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS fp.v TO fp.roll AS SELECT 1 FROM fp.other",
            )
            .unwrap_err();
        assert_eq!(err.reason, "view reads other, not a known table");
    }

    #[test]
    fn inserts_pass_through_drops_cover_both_tables() {
        let mut r = ClusterSchema::new("c", "fp");
        r.render(RAW).unwrap();
        let insert = "INSERT INTO fp.events SELECT * FROM fp.events";
        assert_eq!(r.render(insert).unwrap(), vec![insert]);
        assert_eq!(
            r.render("DROP TABLE IF EXISTS fp.events").unwrap(),
            vec![
                "DROP TABLE IF EXISTS fp.events ON CLUSTER c",
                "DROP TABLE IF EXISTS fp.events_local ON CLUSTER c"
            ]
        );
        assert_eq!(r.drop_view("v"), "DROP TABLE IF EXISTS fp.v ON CLUSTER c");
    }

    #[test]
    fn unknown_forms_fail_loudly() {
        let mut r = ClusterSchema::new("c", "fp");
        for (sql, reason) in [
            (
                "ALTER TABLE fp.events ADD COLUMN x UInt8",
                "expected CREATE TABLE IF NOT EXISTS, CREATE MATERIALIZED VIEW IF NOT EXISTS, INSERT INTO or DROP TABLE IF EXISTS",
            ),
            (
                "CREATE TABLE IF NOT EXISTS fp.m (x UInt8) ENGINE = Memory",
                "engine Memory is not a non-replicated MergeTree family engine",
            ),
            (
                "CREATE TABLE IF NOT EXISTS fp.m (x UInt8) ENGINE = ReplicatedMergeTree('/a', 'b') ORDER BY x",
                "engine ReplicatedMergeTree is not a non-replicated MergeTree family engine",
            ),
            (
                "CREATE TABLE IF NOT EXISTS other.m (x UInt8) ENGINE = MergeTree ORDER BY x",
                "expected a name qualified by fp.",
            ),
            (
                "CREATE TABLE IF NOT EXISTS fp.m AS fp.nothing",
                "AS refers to nothing, not created by an earlier statement",
            ),
            (
                "CREATE MATERIALIZED VIEW IF NOT EXISTS fp.v AS SELECT 1",
                "a materialized view must write TO an explicit table",
            ),
            (
                "INSERT INTO fp.nothing SELECT 1",
                "INSERT into unknown table nothing",
            ),
        ] {
            assert_eq!(r.render(sql).unwrap_err().reason, reason, "{sql}");
        }
    }

    #[test]
    fn bookkeeping_tables_are_replicated_everywhere() {
        let r = ClusterSchema::new("c", "fp");
        assert_eq!(
            r.render_everywhere("CREATE TABLE IF NOT EXISTS fp.schema_migrations (version UInt32) ENGINE = MergeTree ORDER BY version")
                .unwrap(),
            "CREATE TABLE IF NOT EXISTS fp.schema_migrations ON CLUSTER c (version UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/fp/schema_migrations', '{shard}_{replica}') ORDER BY version"
        );
        assert_eq!(
            r.create_database(),
            "CREATE DATABASE IF NOT EXISTS fp ON CLUSTER c"
        );
    }

    #[test]
    fn cluster_names() {
        validate_cluster_name("fleet_2x2").unwrap();
        for bad in ["", "9a", "a-b", "a b", "a'b", &"a".repeat(65)] {
            assert!(validate_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
