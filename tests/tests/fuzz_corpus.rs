//! The fuzz targets on stable Rust: every seed of `fuzz/corpus/<target>/` and every
//! regression input of `fuzz/regressions/<target>/` through the target's body, then a bounded
//! run of deterministic mutations of the seeds (bit flips, interesting bytes, cuts, repeats,
//! splices). The CI machine has only stable Rust, so this is the fuzz smoke run of `.ci/run`;
//! the coverage-guided runs use the same bodies through `fuzz/` (cargo-fuzz, nightly; see
//! DEVELOPERS.md, "Fuzzing").
//!
//! `FLEETPULSE_FUZZ_MUTATIONS` sets the mutations per target (default 3000). A failing input is
//! written to `target/fuzz-failures/<target>-<n>` before the panic is re-raised, so it can be
//! replayed and kept as a regression input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Body = fn(&[u8]);

/// Every target: its name (a folder of `fuzz/corpus/` and a binary of `fuzz/`) and its body.
const TARGETS: &[(&str, Body)] = &[
    ("push_raw", fleetpulse_collector::fuzz::push_raw),
    ("push_gzip", fleetpulse_collector::fuzz::push_gzip),
    ("source_dsregcmd", fleetpulse_agent::fuzz::dsregcmd),
    ("source_event_log", fleetpulse_agent::fuzz::event_log),
    ("source_registry", fleetpulse_agent::fuzz::registry),
    ("source_tpm", fleetpulse_agent::fuzz::tpm),
    (
        "source_mdm_diagnostics",
        fleetpulse_agent::fuzz::mdm_diagnostics,
    ),
    (
        "source_macos_profiles",
        fleetpulse_agent::fuzz::macos_profiles,
    ),
    ("ndjson_import", fleetpulse_agent::fuzz::ndjson),
    ("classify", fleetpulse_analyzer::fuzz::classify),
    ("classify_code", fleetpulse_analyzer::fuzz::code),
    ("api_query", fleetpulse_analyzer::fuzz::api_query),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read input"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs `body` on `data`; on a panic, saves the input and fails naming it.
fn run(target: &str, body: Body, data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| body(data))).is_err() {
        let dir = repo().join("target/fuzz-failures");
        std::fs::create_dir_all(&dir).expect("failure dir");
        let file = dir.join(format!("{target}-{}", what.replace('/', "_")));
        std::fs::write(&file, data).expect("save failing input");
        panic!(
            "{target}: {what} failed; input saved to {} (replay: cargo +nightly fuzz run \
             --fuzz-dir fuzz {target} {})",
            file.display(),
            file.display()
        );
    }
}

fn mutate(rng: &mut StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'"', b'<', b':', b'='];
    let mut d = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = d.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                d[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                d.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                let chunk = d[a..b].to_vec();
                for _ in 0..rng.gen_range(1..=16) {
                    d.splice(b..b, chunk.iter().copied());
                }
            }
            4 => d.truncate(rng.gen_range(0..=len)),
            5 if !other.is_empty() => {
                let at = rng.gen_range(0..=len);
                let a = rng.gen_range(0..other.len());
                let b = rng.gen_range(a..=other.len().min(a + 256));
                d.splice(at..at, other[a..b].iter().copied());
            }
            6 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                d.splice(at..at, bytes);
            }
            _ if len > 1 => {
                let i = rng.gen_range(0..len - 1);
                d.swap(i, i + 1);
            }
            _ => d.push(rng.r#gen()),
        }
    }
    d
}

#[test]
fn every_seed_and_regression_input_passes_every_target() {
    let root = repo();
    for &(target, body) in TARGETS {
        let seeds = inputs(&root.join("fuzz/corpus").join(target));
        assert!(
            seeds.len() >= 4,
            "{target}: {} seeds in fuzz/corpus/{target}",
            seeds.len()
        );
        for (name, data) in &seeds {
            run(target, body, data, &format!("seed {name}"));
        }
        for (name, data) in inputs(&root.join("fuzz/regressions").join(target)) {
            run(target, body, &data, &format!("regression {name}"));
        }
    }
}

#[test]
fn bounded_mutation_run_of_every_target() {
    let root = repo();
    let per_target: usize = std::env::var("FLEETPULSE_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for (t, &(target, body)) in TARGETS.iter().enumerate() {
        let seeds = inputs(&root.join("fuzz/corpus").join(target));
        let mut rng = StdRng::seed_from_u64(0x5eed_0000 + t as u64);
        let start = std::time::Instant::now();
        for n in 0..per_target {
            let seed = &seeds[rng.gen_range(0..seeds.len())].1;
            let other = &seeds[rng.gen_range(0..seeds.len())].1;
            let data = mutate(&mut rng, seed, other);
            run(target, body, &data, &format!("mutation-{n}"));
        }
        eprintln!(
            "{target}: {per_target} mutations of {} seeds in {:.1} s",
            seeds.len(),
            start.elapsed().as_secs_f64()
        );
    }
}

/// Regenerates the Push seeds from the agent's real corpus: what the agent would send for each
/// published tool output, encoded as a PushRequest (`push_raw`) and gzip-compressed with a
/// mode byte (`push_gzip`). Run when the protocol changes:
/// `cargo test -p fleetpulse-tests --test fuzz_corpus -- --ignored write_push_seeds`.
#[test]
#[ignore = "writes fuzz/corpus/push_*; run by hand"]
fn write_push_seeds() {
    use fleetpulse_agent::inspect::{InputKind, parse_bytes};
    use fleetpulse_agent::sources::SourceContext;
    use fleetpulse_proto::v1::{Platform, PushRequest};
    use prost::Message;
    use std::io::Write;

    let root = repo();
    let ctx = SourceContext {
        agent_id: String::new(),
        device_id: "fuzz-device".into(),
        platform: Platform::Windows,
        now: time::OffsetDateTime::from_unix_timestamp(1_717_200_000).expect("time"),
    };
    let kinds = [
        ("source_dsregcmd", InputKind::Dsregcmd),
        ("source_event_log", InputKind::EventXml),
        ("source_registry", InputKind::Registry),
        ("source_tpm", InputKind::Tpm),
        ("source_mdm_diagnostics", InputKind::MdmDiagnostics),
        ("source_macos_profiles", InputKind::MacosProfiles),
        ("ndjson_import", InputKind::Ndjson),
    ];
    let raw_dir = root.join("fuzz/corpus/push_raw");
    let gzip_dir = root.join("fuzz/corpus/push_gzip");
    std::fs::create_dir_all(&raw_dir).expect("dir");
    std::fs::create_dir_all(&gzip_dir).expect("dir");
    let mut written = 0;
    for (dir, kind) in kinds {
        for (name, data) in inputs(&root.join("fuzz/corpus").join(dir)) {
            let Ok(parsed) = parse_bytes(kind, &ctx, &data) else {
                continue;
            };
            if parsed.items.is_empty() {
                continue;
            }
            let req = PushRequest {
                batch_seq: 1,
                items: parsed.items.into_iter().take(64).collect(),
                all_or_nothing: false,
            };
            let bytes = req.encode_to_vec();
            std::fs::write(raw_dir.join(&name), &bytes).expect("write");
            let mut gz = vec![1u8];
            gz.extend_from_slice(&bytes);
            std::fs::write(gzip_dir.join(format!("{name}.message")), &gz).expect("write");
            let mut enc = flate2::write::GzEncoder::new(vec![0u8], flate2::Compression::fast());
            enc.write_all(&bytes).expect("gzip");
            std::fs::write(
                gzip_dir.join(format!("{name}.gz")),
                enc.finish().expect("gzip"),
            )
            .expect("write");
            written += 1;
        }
    }
    assert!(written >= 20, "only {written} push seeds");
}
