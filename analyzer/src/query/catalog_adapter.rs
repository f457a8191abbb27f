//! The production [`SignalClassifier`]: the catalog's classifier.

use serde_json::{Value, json};

use super::classes::{RawSignal, SignalClassifier, SignalInfo};
use crate::catalog::{Catalog, Code};
use crate::classify::Signal;

/// Classifies with a loaded catalog.
pub struct CatalogClassifier {
    catalog: &'static Catalog,
}

impl CatalogClassifier {
    pub fn new(catalog: &'static Catalog) -> Self {
        Self { catalog }
    }

    pub fn catalog(&self) -> &'static Catalog {
        self.catalog
    }

    /// The catalog as served by `GET /api/v1/catalog`, including the prose stage's phrase
    /// lists (so an administrator can see which documented wordings a `prose` answer rests on).
    pub fn catalog_json(&self) -> Value {
        json!({
            "categories": self.catalog.categories(),
            "entries": self.catalog.entries(),
            "rules": self.catalog.rules(),
            "facilities": self.catalog.facilities(),
            "phrases": self.catalog.phrase_lists(),
            "sources": self.catalog.sources(),
        })
    }
}

impl CatalogClassifier {
    /// Classifies CLI-style JSON objects exactly as `fleetpulse-analyzer classify` does (same
    /// code, same output objects, `line` numbering the objects from 1): each object is written
    /// as one NDJSON line and the CLI's output lines are returned in order.
    pub fn classify_values(&self, items: &[Value]) -> Vec<Value> {
        let mut input = String::new();
        for v in items {
            input.push_str(&v.to_string());
            input.push('\n');
        }
        let mut out = Vec::new();
        match crate::classify::cli::run_with_catalog(self.catalog, input.as_bytes(), &mut out) {
            Ok(_) => String::from_utf8_lossy(&out)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                .collect(),
            // Reading from memory and writing to a Vec cannot fail; answer per item anyway.
            Err(e) => items
                .iter()
                .map(|_| json!({"error": e.to_string()}))
                .collect(),
        }
    }
}

fn opt(x: &str) -> Option<&str> {
    (!x.is_empty()).then_some(x)
}

impl SignalClassifier for CatalogClassifier {
    fn classify(&self, s: &RawSignal) -> SignalInfo {
        let c = self.catalog.classify(&Signal {
            code: s.code.map(Code),
            symbol: opt(&s.symbol),
            message: opt(&s.message),
            platform: opt(&s.platform),
            source: opt(&s.source),
            stage: opt(&s.stage),
        });
        SignalInfo {
            category: c.category,
            code: c.code,
            failure_reason: c.failure_reason,
            cause: c.cause,
            remediation: c.remediation,
            source_doc: c.source_doc,
        }
    }

    fn categories(&self) -> Vec<String> {
        self.catalog
            .categories()
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_json_lists_the_phrase_lists_with_their_sources() {
        let json = CatalogClassifier::new(Catalog::embedded()).catalog_json();
        let lists = json["phrases"].as_array().expect("phrases array");
        assert_eq!(lists.len(), Catalog::embedded().phrase_lists().len());
        let device_cap = lists
            .iter()
            .find(|l| l["id"] == "general-device-cap")
            .expect("general-device-cap list");
        assert_eq!(device_cap["category"], "device_cap");
        assert_eq!(
            device_cap["sources"],
            json!(["troubleshoot-device-enrollment"])
        );
        assert_eq!(device_cap["phrases"][0], "Device cap reached");
    }
}
