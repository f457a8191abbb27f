//! The bridge between stored raw signals and the catalog: the query engine asks ClickHouse for
//! the distinct signals in scope, classifies each in Rust (cached), and feeds the categories
//! back to ClickHouse as bound arrays. History is thus always classified by the current catalog.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One distinct raw signal as stored (rollup columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSignal {
    pub code: Option<u32>,
    pub symbol: String,
    pub message: String,
    pub platform: String,
    pub source: String,
    pub stage: String,
}

/// What the API shows about a classified signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SignalInfo {
    pub category: String,
    /// Normalised `0x%08X`, or None when the signal had no code.
    pub code: Option<String>,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
    pub source_doc: String,
}

/// Anything that can classify signals: the catalog in production, fixed tables in unit tests.
pub trait SignalClassifier: Send + Sync {
    fn classify(&self, signal: &RawSignal) -> SignalInfo;
    /// The stable category vocabulary (used to validate `category` filters).
    fn categories(&self) -> Vec<String>;
}

/// Classifications cached by the signal hash ClickHouse computes. Bounded: cleared when full
/// (signals are few compared with events; a clear only costs re-classification).
pub struct ClassCache {
    classifier: Arc<dyn SignalClassifier>,
    map: RwLock<HashMap<u64, Arc<SignalInfo>>>,
}

const CACHE_CAP: usize = 200_000;

impl ClassCache {
    pub fn new(classifier: Arc<dyn SignalClassifier>) -> Self {
        Self {
            classifier,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn classifier(&self) -> &Arc<dyn SignalClassifier> {
        &self.classifier
    }

    pub fn get(&self, sig: u64) -> Option<Arc<SignalInfo>> {
        self.map.read().ok().and_then(|m| m.get(&sig).cloned())
    }

    /// Returns the classification of `signal`, known by ClickHouse's hash `sig`.
    pub fn classify(&self, sig: u64, signal: &RawSignal) -> Arc<SignalInfo> {
        if let Some(hit) = self.get(sig) {
            return hit;
        }
        let info = Arc::new(self.classifier.classify(signal));
        if let Ok(mut m) = self.map.write() {
            if m.len() >= CACHE_CAP {
                m.clear();
            }
            m.insert(sig, info.clone());
        }
        info
    }
}

/// Formats a stored code the way the catalog normalises it.
pub fn format_code(code: u32, has_code: bool) -> Option<String> {
    has_code.then(|| format!("0x{code:08X}"))
}
