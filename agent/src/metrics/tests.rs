use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
};

use super::*;
use crate::{
    event::{kind, Event},
    sinks::{SinkSpec, Sinks},
};

/// `GET path` over a fresh connection: status line and body.
fn get(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Every line is a comment, or a sample whose value is a number.
fn parse_strict(text: &str) -> prometheus_parse::Scrape {
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Sample { value, .. } => {
                assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
            }
            prometheus_parse::LineInfo::Ignored => panic!("not exposition text: {line:?}"),
            _ => {}
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn only_loopback_is_accepted() {
    let ok = MetricsSection {
        listen: Some("127.0.0.1:9464".into()),
    };
    assert!(ok.validate().unwrap().is_some());
    assert!(MetricsSection::default().validate().unwrap().is_none());
    let open = MetricsSection {
        listen: Some("0.0.0.0:9464".into()),
    };
    assert!(matches!(open.validate(), Err(MetricsError::Listen { .. })));
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scrape's list of expected samples"
)]
fn scrapes_show_pipeline_and_sink_counters_as_they_move() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let sinks = Sinks::start(&[SinkSpec::File(file.clone())]).unwrap();
    let metrics = AgentMetrics::new(sinks.stats_handle());
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.registry()).unwrap();

    let (head, body) = get(server.addr, "GET", "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let s = parse_strict(&body);
    let sink = file.display().to_string();
    let sink = format!("file:{sink}");
    assert_eq!(
        value(&s, "aitrail_sink_lines_written_total", &[("sink", &sink)]),
        Some(0.0)
    );

    for n in 0..3 {
        let ev = Event {
            id: format!("ev-{n}"),
            kind: kind::FILE_OPEN.into(),
            ..Event::default()
        };
        sinks.send(&ev);
    }
    let mut figures = PipelineFigures::default();
    figures.records.insert("file_open", 3);
    figures.events.insert(kind::FILE_OPEN.into(), 3);
    figures.dropped.insert("ringbuf_records_lost".into(), 5);
    figures.findings.insert("sensitive_file".into(), 1);
    figures.counters.insert("llm_calls".into(), 2);
    figures.gauges.insert("open_connections".into(), 4);
    metrics.publish(figures);
    let stats = {
        let h = sinks.stats_handle();
        sinks.shutdown().unwrap();
        h.stats()
    };
    assert_eq!(stats.sinks[0].lines_written, 3);

    let (_, body) = get(server.addr, "GET", "/metrics", None);
    let s = parse_strict(&body);
    for (name, labels, want) in [
        (
            "aitrail_sink_lines_queued_total",
            vec![("sink", sink.as_str())],
            3.0,
        ),
        (
            "aitrail_sink_lines_written_total",
            vec![("sink", sink.as_str())],
            3.0,
        ),
        (
            "aitrail_sink_lines_dropped_total",
            vec![("sink", sink.as_str())],
            0.0,
        ),
        (
            "aitrail_agent_records_total",
            vec![("kind", "file_open")],
            3.0,
        ),
        (
            "aitrail_agent_events_total",
            vec![("kind", "file.open")],
            3.0,
        ),
        (
            "aitrail_agent_dropped_total",
            vec![("cause", "ringbuf_records_lost")],
            5.0,
        ),
        (
            "aitrail_agent_findings_total",
            vec![("class", "sensitive_file")],
            1.0,
        ),
        (
            "aitrail_agent_health_counter_total",
            vec![("name", "llm_calls")],
            2.0,
        ),
        (
            "aitrail_agent_health_gauge",
            vec![("name", "open_connections")],
            4.0,
        ),
    ] {
        assert_eq!(
            value(&s, name, &labels),
            Some(want),
            "{name} {labels:?}\n{body}"
        );
    }
    assert!(value(&s, "aitrail_sink_written_bytes_total", &[("sink", &sink)]).unwrap() > 30.0);
    assert!(value(&s, "aitrail_agent_start_time_seconds", &[]).unwrap() > 1.7e9);
    // Every family has its HELP and TYPE.
    assert!(body.contains("# TYPE aitrail_ship_events_dropped_total counter"));
    assert!(body.contains("# TYPE aitrail_ship_spool_bytes gauge"));

    // OpenMetrics when asked; 404 and 405 elsewhere.
    let (head, body) = get(
        server.addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));
    let (head, _) = get(server.addr, "GET", "/", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = get(server.addr, "POST", "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    drop(server);
}
