//! A search: filters that map to indexed columns, and free text that goes
//! to FTS5 as quoted terms (so user input is never FTS5 syntax).

use std::fmt::Write as _;

use rusqlite::types::Value;

/// Most events one search returns.
pub const MAX_LIMIT: u32 = 1000;

/// Kinds that are entries of the store's audit log, not events.
pub const AUDIT_KINDS: [&str; 2] = ["tombstone", "release"];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// ns since the Unix epoch, inclusive.
    pub since: Option<i64>,
    /// ns since the Unix epoch, exclusive.
    pub until: Option<i64>,
    pub kind: Option<String>,
    pub host: Option<String>,
    pub user: Option<String>,
    pub trace: Option<String>,
    /// At least this severity (0 info … 4 critical).
    pub min_severity: Option<u8>,
    pub rule: Option<String>,
    /// Words that must all appear in the event's text.
    pub text: Option<String>,
    /// At most this many (capped at [`MAX_LIMIT`]); 100 when 0.
    pub limit: u32,
}

/// `"word"` per whitespace-separated word (quotes doubled): FTS5 then
/// matches all of them, whatever characters they hold.
pub fn fts_terms(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Query {
    /// `tombstone` or `release` when the query is for the audit log.
    pub fn audit_kind(&self) -> Option<&str> {
        self.kind.as_deref().filter(|k| AUDIT_KINDS.contains(k))
    }

    /// The number of events asked for: 100 when 0, at most [`MAX_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(MAX_LIMIT),
        }
    }

    /// The `WHERE` clause of the filters, and its arguments.
    fn filters(&self) -> (String, Vec<Value>) {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut filter = |cond: &str, v: Value| {
            args.push(v);
            let _ = write!(sql, " AND {cond} ?{}", args.len());
        };
        if let Some(t) = self.since {
            filter("ts >=", Value::Integer(t));
        }
        if let Some(t) = self.until {
            filter("ts <", Value::Integer(t));
        }
        for (col, v) in [
            ("kind", &self.kind),
            ("host", &self.host),
            ("user", &self.user),
            ("trace_id", &self.trace),
            ("rule", &self.rule),
        ] {
            if let Some(v) = v {
                filter(&format!("{col} ="), Value::Text(v.clone()));
            }
        }
        if let Some(s) = self.min_severity {
            filter("severity >=", Value::Integer(i64::from(s)));
        }
        if let Some(terms) = self.text.as_deref().and_then(fts_terms) {
            filter(
                "seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH",
                Value::Text(terms),
            );
            sql.push(')');
        }
        (sql, args)
    }

    /// The SQL and its arguments.
    pub fn to_sql(&self) -> (String, Vec<Value>) {
        let (filters, args) = self.filters();
        let sql = format!(
            "SELECT body FROM events{filters} ORDER BY ts DESC, seq DESC LIMIT {}",
            self.effective_limit()
        );
        (sql, args)
    }

    /// `SELECT seq, body` in store order (by seq), for `tail`: seqs in
    /// `(after, upto]` when given, newest first when `desc`.
    pub fn to_sql_after(
        &self,
        range: Option<(i64, i64)>,
        desc: bool,
        limit: u32,
    ) -> (String, Vec<Value>) {
        let (mut filters, mut args) = self.filters();
        if let Some((after, upto)) = range {
            args.push(Value::Integer(after));
            args.push(Value::Integer(upto));
            let _ = write!(
                filters,
                " AND seq > ?{} AND seq <= ?{}",
                args.len() - 1,
                args.len()
            );
        }
        let order = if desc { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT seq, body FROM events{filters} ORDER BY seq {order} LIMIT {}",
            limit.clamp(1, MAX_LIMIT)
        );
        (sql, args)
    }
}
