//! Embeds the dashboard's built files (`web/dist/`, produced by `npm run build` in `web/`) into
//! the binary as `$OUT_DIR/web_assets.rs`: a static table of (path, bytes).
//!
//! When `web/dist/index.html` is absent (a machine without Node.js), the table is empty and the
//! analyzer serves a page explaining how to build the dashboard: `cargo build` never needs
//! Node. Hand-written instead of `rust-embed`: twenty lines here against a proc-macro crate
//! and its dependencies in every cold build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("web");
    let dist = web.join("dist");
    // dist/ when it exists (its files are what is embedded: `npm ci` rewriting node_modules
    // must not recompile the analyzer), else the whole web/ folder, so that dist/ appearing
    // reruns this script. (A missing path would make cargo rerun this script, and recompile
    // the crate, on every build.)
    let watched = if dist.is_dir() { &dist } else { &web };
    println!("cargo:rerun-if-changed={}", watched.display());
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Built dashboard files: (path relative to dist/, contents).\n");
    out.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        let _ = writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),");
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::write(out_dir.join("web_assets.rs"), out) {
        panic!("cannot write web_assets.rs: {e}");
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            files.push((rel, path.to_string_lossy().into_owned()));
        }
    }
}
