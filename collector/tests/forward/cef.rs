//! CEF over TLS into a real rsyslog.

use std::collections::HashMap;

use aitrail_collector::forward::Destination;
use serde_json::Value;

use crate::{
    pki::Pki,
    rsyslog::{mtls, wait_received, Rsyslog},
    support::event,
    syslog::{build, runtime, send_all, table},
};

/// Splits a CEF line into its 7 header fields and the extension's pairs,
/// both unescaped.
pub fn parse_cef(line: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    while fields.len() < 7 {
        match chars.next().expect("7 header fields") {
            '\\' => cur.push(chars.next().unwrap()),
            '|' => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: Vec<char> = chars.collect();
    // Pair starts: `key=` at the start or after a space, key alphanumeric.
    let mut starts = Vec::new();
    let mut i = 0;
    while i < ext.len() {
        if ext[i] == '\\' {
            i += 2;
            continue;
        }
        if (i == 0 || ext[i - 1] == ' ') && ext[i].is_ascii_alphanumeric() {
            let mut j = i;
            while j < ext.len() && ext[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j < ext.len() && ext[j] == '=' {
                starts.push((i, j));
            }
        }
        i += 1;
    }
    let mut pairs = HashMap::new();
    for (n, (k0, k1)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(ext.len(), |(s, _)| s - 1);
        let raw = &ext[k1 + 1..end];
        let mut v = String::new();
        let mut it = raw.iter();
        while let Some(c) = it.next() {
            if *c == '\\' {
                match it.next() {
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some(o) => v.push(*o),
                    None => {}
                }
            } else {
                v.push(*c);
            }
        }
        pairs.insert(ext[*k0..*k1].iter().collect(), v);
    }
    (fields, pairs)
}

#[test]
fn cef_over_tls_to_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let rs = Rsyslog::start(&dir.path().join("rsyslog"), &pki, 0);
    let (dest, _) = build(&table(rs.port, "cef", &mtls(&pki)));
    assert_eq!(dest.kind(), "cef");
    let events: Vec<Value> = (0..160).map(event).collect();
    let rt = runtime();
    send_all(&rt, &dest, &events, 40);
    let got = wait_received(&rs, events.len());
    assert_eq!(got.len(), events.len());
    let by_id: HashMap<String, &Value> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for line in &got {
        assert_eq!(line["sd"], "-");
        let msg = line["msg"].as_str().unwrap();
        assert!(msg.starts_with("CEF:0|aitrail|aitrail|"), "{msg}");
        assert!(!msg.contains('\u{FEFF}'), "no BOM before CEF");
        let (h, x) = parse_cef(msg);
        assert_eq!(h[3], env!("CARGO_PKG_VERSION"));
        let id = &x["externalId"];
        assert!(seen.insert(id.clone()), "{id} twice");
        let e = by_id[id.as_str()];
        let kind = e["kind"].as_str().unwrap();
        assert_eq!(line["msgid"], kind);
        let sev = ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|s| *s == e["severity"])
            .unwrap();
        assert_eq!(h[6], ["1", "3", "5", "8", "10"][sev]);
        if e.get("process").is_some() {
            assert_eq!(x["suser"], "dév", "{kind}");
            assert_eq!(x["spid"], e["process"]["pid"].to_string());
        }
        match kind {
            "file.open" => {
                let path = e["file"]["path"].as_str().unwrap();
                assert_eq!(x["filePath"], without_controls_cef(path));
                assert_eq!(x["outcome"], "failure");
                assert_eq!(h[4], "file.open");
            }
            "finding" => {
                assert_eq!(h[4], "file.shadow");
                assert_eq!(
                    h[5],
                    without_breaks(e["finding"]["title"].as_str().unwrap())
                );
                assert_eq!(x["cat"], "sensitive_file");
            }
            "llm.call" => {
                assert_eq!(x["cs3"], "gpt-4o-mini");
                assert_eq!(x["cn1"], e["llm"]["usage"]["input_tokens"].to_string());
            }
            "tool.call" => {
                assert_eq!(
                    x["cs5"],
                    without_controls_cef(e["tool"]["arguments"].as_str().unwrap())
                );
            }
            _ => {}
        }
    }
    assert_eq!(seen.len(), events.len());
}

/// CEF keeps `\n` and `\r` (escaped), other control characters become
/// U+FFFD.
fn without_controls_cef(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\r' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// CEF header fields: line breaks become spaces, other controls U+FFFD.
fn without_breaks(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}
