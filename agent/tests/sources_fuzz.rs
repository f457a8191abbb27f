//! No panic on any input: every prefix of every fixture, and deterministic pseudo-random
//! byte mutations of them, fed to every parser. Results may be errors; they must not panic.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::{InputKind, parse_bytes};
use fleetpulse_agent::sources::event_xml::{Cursor, parse_events};

const FIXTURES: &[&str] = &[
    "dsregcmd_failed_sync_join.txt",
    "dsregcmd_failed_sync_join.utf16le.txt",
    "dsregcmd_discovery_failure.txt",
    "dsregcmd_prt_failure.txt",
    "dsregcmd_entra_joined.txt",
    "event_dm_admin_wevtutil.xml",
    "event_get_winevent_rendered.xml",
    "registry_enrollments.txt",
    "tpmtool_getdeviceinformation.txt",
    "get_tpm.txt",
    "mdm_diag_report.xml",
    "macos_profiles_status.txt",
    "macos_profiles_dep.txt",
    "import_events.ndjson",
];

const KINDS: &[InputKind] = &[
    InputKind::Dsregcmd,
    InputKind::EventXml,
    InputKind::Registry,
    InputKind::Tpm,
    InputKind::MdmDiagnostics,
    InputKind::MacosProfiles,
    InputKind::Ndjson,
];

/// Runs every parser on `bytes`; the results are ignored, only panics fail the test.
fn feed(bytes: &[u8]) {
    let ctx = support::ctx();
    for &kind in KINDS {
        let _ = parse_bytes(kind, &ctx, bytes);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let mut cursor = Cursor::default();
        cursor.channels.insert(
            "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin".to_owned(),
            17_321,
        );
        let _ = parse_events(text, &ctx, &cursor);
    }
}

#[test]
fn every_prefix_of_every_fixture_is_handled_without_panic() {
    for name in FIXTURES {
        let bytes = support::fixture_bytes(name);
        // Every prefix for the small fixtures; every 3rd byte for the large ones keeps the
        // test under a few seconds in debug builds while still cutting inside every token.
        let step = if bytes.len() > 4000 { 3 } else { 1 };
        for end in (0..=bytes.len()).step_by(step) {
            feed(&bytes[..end]);
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

#[test]
fn random_mutations_of_every_fixture_are_handled_without_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Bytes that matter to the parsers: separators, markup, encodings, multi-byte UTF-8.
    let interesting: &[u8] = b":<>/\"=;{}()[]\r\n\t -+|\\\0\xff\xfe\xc3\xa9\xe2\x82";
    for name in FIXTURES {
        let original = support::fixture_bytes(name);
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes[at] = interesting[rng.below(interesting.len())];
                    }
                    1 => {
                        let at = rng.below(bytes.len() + 1);
                        bytes.insert(at, interesting[rng.below(interesting.len())]);
                    }
                    2 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes.remove(at);
                    }
                    _ => {
                        let at = rng.below(bytes.len() + 1);
                        bytes.truncate(at);
                    }
                }
            }
            feed(&bytes);
        }
    }
}
