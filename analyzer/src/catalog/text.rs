//! Text normalisation shared by the catalog (when compiling patterns) and the classifier (when
//! reading signals), so both sides always compare the same form.

/// Normalises a symbolic name for lookup: drops a short XML namespace prefix (`s:`, `a:`),
/// then keeps only ASCII letters and digits, lower-cased.
///
/// `DeviceCapReached`, `s:DeviceCapReached`, `devicecapreached`, `device cap reached` and
/// `DEVICE_CAP_REACHED` all become `devicecapreached`, which is how the SOAP sample's
/// `<errortype>devicecapreached</errortype>` and the spec's `DeviceCapReached` meet.
pub fn normalize_symbol(symbol: &str) -> String {
    let trimmed = symbol.trim();
    let without_ns = match trimmed.split_once(':') {
        Some((prefix, rest))
            if !prefix.is_empty()
                && prefix.len() <= 3
                && prefix.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            rest
        }
        _ => trimmed,
    };
    without_ns
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Normalises free text for substring matching: lower case, typographic quotes folded to ASCII,
/// contractions expanded (`isn't` → `is not`, `can't` → `cannot`), runs of whitespace collapsed
/// to one space, surrounding whitespace removed.
///
/// Documents quote the same UI message both as "This user isn't authorized" and "This user is
/// not authorized"; after this both read the same.
pub fn normalize_text(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{2032}' => folded.push('\''),
            '\u{201C}' | '\u{201D}' => folded.push('"'),
            '\u{2010}' | '\u{2011}' | '\u{2013}' | '\u{2014}' => folded.push('-'),
            '\u{00A0}' | '\u{202F}' => folded.push(' '),
            other => folded.extend(other.to_lowercase()),
        }
    }
    let expanded = folded
        .replace("can't", "cannot")
        .replace("won't", "will not")
        .replace("n't", " not");
    let mut out = String::with_capacity(expanded.len());
    for word in expanded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_fold_namespace_case_and_separators() {
        for s in [
            "DeviceCapReached",
            "s:DeviceCapReached",
            "devicecapreached",
            "device cap reached",
            "  DEVICE_CAP_REACHED ",
        ] {
            assert_eq!(normalize_symbol(s), "devicecapreached", "{s}");
        }
        assert_eq!(
            normalize_symbol("MENROLL_E_DEVICECAPREACHED"),
            "menrolledevicecapreached"
        );
        assert_eq!(normalize_symbol("Fault:X"), "faultx");
    }

    #[test]
    fn text_folds_contractions_quotes_and_space() {
        assert_eq!(
            normalize_text("This user isn\u{2019}t   authorized\tto enroll."),
            "this user is not authorized to enroll."
        );
        assert_eq!(normalize_text("Can't connect"), "cannot connect");
        assert_eq!(normalize_text("doesn't couldn't"), "does not could not");
    }
}
