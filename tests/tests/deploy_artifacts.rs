//! The deployment artifacts under `deploy/` (Dockerfiles, compose, Helm chart, systemd units,
//! launchd plist, Windows install script, sample configs, READMEs) and the docs use only flags
//! and environment variables the built binaries accept: every one is looked up in the
//! binaries' own `--help`, so a renamed or removed option fails here instead of at deploy time.
//!
//! What is checked:
//! - every `FLEETPULSE_{COLLECTOR,ANALYZER,AGENT}_*` name anywhere in the files is documented
//!   (`[env: ...]`) by some subcommand of that binary;
//! - every command line (a line naming `fleetpulse-collector`, `fleetpulse-analyzer` or
//!   `fleetpulse-agent` followed by arguments; a plist's `ProgramArguments`) resolves its
//!   subcommands and uses only `--flags` that subcommand's `--help` lists;
//! - the PowerShell installer, whose command lines are argument arrays, uses only flags some
//!   agent subcommand accepts;
//! - every key of `deploy/collector.toml` is a `fleetpulse-collector serve` option (the TOML
//!   keys are the flags' names by design).
//!
//! Command lines must therefore stay on one line in the artifacts (flow-style YAML lists,
//! JSON-form CMD), which the test also enforces for the known invocations (see `expected`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use fleetpulse_tests::harness::collector::workspace_binary;

const BINARIES: [&str; 3] = [
    "fleetpulse-collector",
    "fleetpulse-analyzer",
    "fleetpulse-agent",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The parsed `--help` of one command (binary plus subcommand path).
#[derive(Debug, Default, Clone)]
struct Help {
    subcommands: BTreeSet<String>,
    flags: BTreeSet<String>,
    envs: BTreeSet<String>,
}

/// Runs the built binaries' `--help` and caches what they say.
struct HelpBook {
    cache: BTreeMap<Vec<String>, Help>,
}

impl HelpBook {
    fn new() -> Self {
        Self {
            cache: BTreeMap::new(),
        }
    }

    /// `path` is the binary name followed by subcommands.
    fn help(&mut self, path: &[String]) -> Help {
        if let Some(h) = self.cache.get(path) {
            return h.clone();
        }
        let bin = workspace_binary(&path[0]).unwrap_or_else(|e| {
            panic!(
                "{e}: build the binaries first (cargo build --workspace --bins; scripts/test.sh does)"
            )
        });
        let out = Command::new(&bin)
            .args(&path[1..])
            .arg("--help")
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("run {} --help: {e}", bin.display()));
        assert!(
            out.status.success(),
            "`{} --help` failed: {}",
            path.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let help = parse_help(&String::from_utf8_lossy(&out.stdout));
        self.cache.insert(path.to_vec(), help.clone());
        help
    }

    /// The help of every command in the binary's tree (the binary, its subcommands, theirs...).
    fn tree(&mut self, bin: &str) -> Vec<Help> {
        let mut helps = Vec::new();
        let mut queue = vec![vec![bin.to_owned()]];
        while let Some(path) = queue.pop() {
            let help = self.help(&path);
            for sub in &help.subcommands {
                let mut next = path.clone();
                next.push(sub.clone());
                queue.push(next);
            }
            helps.push(help);
        }
        helps
    }

    /// Every environment variable documented anywhere in the binary's command tree.
    fn all_envs(&mut self, bin: &str) -> BTreeSet<String> {
        self.tree(bin).into_iter().flat_map(|h| h.envs).collect()
    }

    /// Every flag of any command in the binary's tree.
    fn all_flags(&mut self, bin: &str) -> BTreeSet<String> {
        self.tree(bin).into_iter().flat_map(|h| h.flags).collect()
    }
}

/// Reads clap's help layout: a `Commands:` section of `  name  description` lines, option
/// lines starting with `-x, --name` or `--name`, and `[env: NAME=...]` annotations.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        if line.trim_end().ends_with(':') && !line.starts_with(' ') {
            in_commands = line.starts_with("Commands:");
            continue;
        }
        if in_commands {
            if let Some(rest) = line.strip_prefix("  ")
                && !rest.starts_with(' ')
                && let Some(name) = rest.split_whitespace().next()
                && name != "help"
            {
                help.subcommands.insert(name.to_owned());
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            for token in trimmed.split([' ', ',', '=', '<', '[']) {
                if let Some(flag) = token.strip_prefix("--")
                    && !flag.is_empty()
                {
                    help.flags.insert(flag.to_owned());
                }
            }
        }
    }
    // clap wraps long lines, also between `[env:` and the name.
    let mut rest = text;
    while let Some(pos) = rest.find("[env:") {
        let after = rest[pos + 5..].trim_start();
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        help.envs.insert(name);
        rest = after;
    }
    help
}

/// Files whose flags and variables are checked: all of `deploy/` plus the docs.
fn artifact_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    let mut stack = vec![root.join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.extension().is_some_and(|e| e == "go" || e == "png") {
                files.push(path);
            }
        }
    }
    files.push(root.join("README.md"));
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// One command line found in a file.
#[derive(Debug)]
struct Invocation {
    file: String,
    line: usize,
    binary: String,
    args: Vec<String>,
}

/// Where `name` occurs in `line` as a program name: not part of a longer word such as
/// `fleetpulse-collector.service`, `fleetpulse-collector-tls` or `fleetpulse-agent/`.
fn program_positions(line: &str, name: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = line[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        let before_ok = start == 0
            || !line[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        let after = &line[end..];
        let after = after.strip_prefix(".exe").unwrap_or(after);
        let after_ok = after
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ']' | ')'));
        if before_ok && after_ok {
            found.push(end);
        }
        from = end;
    }
    found
}

/// Splits the rest of a command line into arguments: quotes, brackets, commas and YAML/JSON
/// list syntax removed; stops at shell operators and at the end of a Markdown code span.
fn arguments(rest: &str) -> Vec<String> {
    let rest = rest.strip_prefix(".exe").unwrap_or(rest);
    let rest = rest.split('`').next().unwrap_or("");
    let mut args = Vec::new();
    for raw in rest.split_whitespace() {
        if matches!(
            raw,
            "|" | "||" | "&&" | ";" | ">" | ">>" | "2>" | "2>&1" | "<"
        ) {
            break;
        }
        let token = raw.trim_matches(|c: char| {
            matches!(
                c,
                '"' | '\'' | ',' | '[' | ']' | '(' | ')' | '\\' | '{' | '}'
            )
        });
        if token.is_empty() {
            continue;
        }
        // Another program's command line starts here (`runuser -u x -- fleetpulse-agent ...`).
        if BINARIES.iter().any(|b| token.ends_with(b)) {
            break;
        }
        args.push(token.to_owned());
        if raw.ends_with(']') || raw.ends_with(';') {
            break;
        }
    }
    args
}

fn invocations(files: &[PathBuf]) -> Vec<Invocation> {
    let root = repo_root();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for (i, line) in text.lines().enumerate() {
            // Account management names the service users after the binaries.
            let first = line.trim_start().trim_start_matches(['$', '#', ' ']);
            if ["useradd", "groupadd", "userdel"]
                .iter()
                .any(|cmd| first.starts_with(cmd))
            {
                continue;
            }
            for bin in BINARIES {
                for end in program_positions(line, bin) {
                    // `--bin fleetpulse-agent`, `-u fleetpulse-agent`: a flag's value.
                    let start = end - bin.len();
                    if line[..start]
                        .split_whitespace()
                        .next_back()
                        .is_some_and(|prev| prev.starts_with('-') && prev != "--")
                    {
                        continue;
                    }
                    out.push(Invocation {
                        file: file.clone(),
                        line: i + 1,
                        binary: bin.to_owned(),
                        args: arguments(&line[end..]),
                    });
                }
            }
        }
        if path.extension().is_some_and(|e| e == "plist") {
            out.extend(plist_program(&text, &file));
        }
    }
    out
}

/// A launchd plist's `ProgramArguments` array as one invocation.
fn plist_program(text: &str, file: &str) -> Option<Invocation> {
    let start = text.find("<key>ProgramArguments</key>")?;
    let array = &text[start..];
    let end = array.find("</array>")?;
    let mut strings = Vec::new();
    let mut rest = &array[..end];
    while let Some(open) = rest.find("<string>") {
        let after = &rest[open + 8..];
        let close = after.find("</string>")?;
        strings.push(after[..close].to_owned());
        rest = &after[close..];
    }
    let program = strings.first()?;
    let binary = BINARIES.iter().find(|b| program.ends_with(*b))?.to_string();
    Some(Invocation {
        file: format!("{file} (ProgramArguments)"),
        line: 0,
        binary,
        args: strings[1..].to_vec(),
    })
}

/// Resolves the subcommand path of an invocation and returns the flags its help does not list.
fn unknown_flags(book: &mut HelpBook, inv: &Invocation) -> (Vec<String>, Vec<String>) {
    let mut path = vec![inv.binary.clone()];
    let mut help = book.help(&path);
    let mut unknown = Vec::new();
    let mut resolving = true;
    for arg in &inv.args {
        if resolving && !arg.starts_with('-') && help.subcommands.contains(arg) {
            path.push(arg.clone());
            help = book.help(&path);
            continue;
        }
        if let Some(flag) = arg.strip_prefix("--") {
            resolving = false;
            let name = flag.split('=').next().unwrap_or(flag);
            if name.is_empty()
                || matches!(name, "help" | "version")
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                continue;
            }
            if !help.flags.contains(name) {
                unknown.push(format!("--{name}"));
            }
        } else if !arg.starts_with('-') {
            // A value or prose: subcommands come before any flag's value.
            resolving = resolving && arg.starts_with('<');
        }
    }
    (path, unknown)
}

#[test]
fn artifacts_use_only_flags_the_binaries_accept() {
    let files = artifact_files();
    let invs = invocations(&files);
    let mut book = HelpBook::new();
    let mut problems = Vec::new();
    let mut resolved = BTreeSet::new();
    for inv in &invs {
        let (path, unknown) = unknown_flags(&mut book, inv);
        resolved.insert(format!("{} {}", inv.file, path.join(" ")));
        for flag in unknown {
            problems.push(format!(
                "{}:{}: `{}` has no {flag} (args: {})",
                inv.file,
                inv.line,
                path.join(" "),
                inv.args.join(" ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "flags the binaries do not accept:\n{}",
        problems.join("\n")
    );

    // The extraction must keep finding the artifacts' command lines: if a file's layout
    // changes so that they are no longer on one line, this fails instead of checking nothing.
    let expected = [
        "deploy/fleetpulse-collector.service fleetpulse-collector serve",
        "deploy/fleetpulse-analyzer.service fleetpulse-analyzer serve",
        "deploy/agent/fleetpulse-agent.service fleetpulse-agent run",
        "deploy/agent/com.fleetpulse.agent.plist (ProgramArguments) fleetpulse-agent run",
        "deploy/docker/agent.Dockerfile fleetpulse-agent status",
        "deploy/compose/docker-compose.yml fleetpulse-collector serve",
        "deploy/compose/docker-compose.yml fleetpulse-collector token create",
        "deploy/compose/docker-compose.yml fleetpulse-agent simulate",
        "deploy/compose/docker-compose.yml fleetpulse-analyzer serve",
        "deploy/compose/docker-compose.yml fleetpulse-analyzer key create",
        "deploy/helm/fleetpulse/templates/collector-deployment.yaml fleetpulse-collector serve",
        "deploy/helm/fleetpulse/templates/analyzer-deployment.yaml fleetpulse-analyzer serve",
        "deploy/helm/fleetpulse/templates/NOTES.txt fleetpulse-collector token create",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|e| !resolved.contains(*e))
        .collect();
    assert!(
        missing.is_empty(),
        "command lines no longer found (keep each on one line): {missing:?}\nfound: {resolved:#?}"
    );
}

#[test]
fn artifacts_use_only_documented_environment_variables() {
    let mut book = HelpBook::new();
    let known: BTreeMap<&str, BTreeSet<String>> =
        BINARIES.iter().map(|b| (*b, book.all_envs(b))).collect();
    let root = repo_root();
    // Names that belong to other programs: the dashboard's dev server (analyzer/web).
    let others = ["FLEETPULSE_ANALYZER_URL"];
    let mut problems = BTreeSet::new();
    let mut seen = 0;
    for path in artifact_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (prefix, bin) in [
            ("FLEETPULSE_COLLECTOR_", "fleetpulse-collector"),
            ("FLEETPULSE_ANALYZER_", "fleetpulse-analyzer"),
            ("FLEETPULSE_AGENT_", "fleetpulse-agent"),
        ] {
            let mut rest = text.as_str();
            while let Some(pos) = rest.find(prefix) {
                let before = rest[..pos].chars().next_back();
                let name: String = rest[pos..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                rest = &rest[pos + name.len().max(1)..];
                // `FLEETPULSE_COLLECTOR_<OPTION>`-style placeholders are prose, not names.
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    || name.ends_with('_')
                {
                    continue;
                }
                seen += 1;
                if !known[bin].contains(&name) && !others.contains(&name.as_str()) {
                    problems.insert(format!(
                        "{}: {name} is not an environment variable of {bin}",
                        path.strip_prefix(&root).unwrap_or(&path).display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "undocumented environment variables:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        seen > 50,
        "only {seen} variable names found: is deploy/ there?"
    );
}

#[test]
fn powershell_installer_uses_only_agent_flags() {
    let path = repo_root().join("deploy/agent/install-windows.ps1");
    let text = std::fs::read_to_string(&path).expect("install-windows.ps1");
    let mut book = HelpBook::new();
    let flags = book.all_flags("fleetpulse-agent");
    let mut used = BTreeSet::new();
    for token in text.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ',' | '`')) {
        if let Some(flag) = token.strip_prefix("--")
            && !flag.is_empty()
            && flag.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        {
            used.insert(flag.to_owned());
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|f| !flags.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "install-windows.ps1 uses flags no agent subcommand has: {unknown:?}"
    );
    for expected in ["config", "state-file", "collector", "enrollment-token"] {
        assert!(used.contains(expected), "--{expected} no longer found");
    }
}

#[test]
fn collector_sample_config_keys_are_collector_options() {
    let path = repo_root().join("deploy/collector.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/collector.toml");
    let table: toml::Table = toml::from_str(&text).expect("deploy/collector.toml parses");
    let mut book = HelpBook::new();
    let serve = book.help(&["fleetpulse-collector".to_owned(), "serve".to_owned()]);
    let unknown: Vec<String> = table
        .keys()
        .map(|k| k.replace('_', "-"))
        .filter(|k| !serve.flags.contains(k))
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/collector.toml keys without a `serve` option: {unknown:?}"
    );
    assert!(table.len() >= 10, "only {} keys parsed", table.len());
}

#[test]
fn help_parser_reads_clap_layout() {
    let help = parse_help(
        "Run it\n\nUsage: x [OPTIONS] <COMMAND>\n\nCommands:\n  serve    Serve\n  token    Tokens\n  help     Print this\n\nOptions:\n      --config <FILE>\n          TOML [env: X_CONFIG=]\n  -h, --help\n          Print help\n",
    );
    assert_eq!(
        help.subcommands,
        BTreeSet::from(["serve".to_owned(), "token".to_owned()])
    );
    assert_eq!(
        help.flags,
        BTreeSet::from(["config".to_owned(), "help".to_owned()])
    );
    assert_eq!(help.envs, BTreeSet::from(["X_CONFIG".to_owned()]));
    assert_eq!(
        arguments(r#"", "serve", "--config", "/etc/x.toml"]"#),
        vec!["serve", "--config", "/etc/x.toml"]
    );
    assert_eq!(
        arguments(" token create --tenant x | head -n 1"),
        vec!["token", "create", "--tenant", "x"]
    );
    assert!(
        program_positions(
            "deploy/fleetpulse-collector.service",
            "fleetpulse-collector"
        )
        .is_empty()
    );
    assert!(program_positions("name: fleetpulse-collector-tls", "fleetpulse-collector").is_empty());
    assert_eq!(
        program_positions(
            "ExecStart=/usr/local/bin/fleetpulse-collector serve",
            "fleetpulse-collector"
        ),
        vec![45]
    );
}
