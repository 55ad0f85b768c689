use std::fs;

use super::*;
use crate::event::{kind, FindingInfo, ToolCall};

fn route(text: &str) -> Vec<RouteConfig> {
    #[derive(Deserialize)]
    struct Doc {
        route: Vec<RouteConfig>,
    }
    toml::from_str::<Doc>(text).expect("routes parse").route
}

fn event(k: &str, severity: Severity) -> Event {
    Event {
        id: format!("{k}-{severity:?}"),
        kind: k.to_owned(),
        severity,
        ..Event::default()
    }
}

fn finding(class: &str, severity: Severity) -> Event {
    let mut ev = event(kind::FINDING, severity);
    ev.id = format!("finding-{class}-{severity:?}");
    ev.finding = Some(FindingInfo {
        class: class.to_owned(),
        ..FindingInfo::default()
    });
    ev
}

/// Sends `events` through routes to file sinks in a temporary directory
/// and returns the ids each file received.
fn run(routes_toml: &str, catch_all: &[&str], events: &[Event]) -> (Vec<Vec<String>>, Router) {
    let dir = tempfile::tempdir().unwrap();
    let toml = routes_toml.replace("DIR", dir.path().to_str().unwrap());
    let route_list = route(&toml);
    let catch_all: Vec<SinkSpec> = catch_all
        .iter()
        .map(|s| {
            s.replace("DIR", dir.path().to_str().unwrap())
                .parse()
                .unwrap()
        })
        .collect();
    let mut specs = catch_all.clone();
    specs.extend(Router::sink_specs(&route_list));
    let sinks = Sinks::start(&specs).unwrap();
    let mut router = Router::new(&route_list, &catch_all, &sinks).unwrap();
    for ev in events {
        let mask = router.targets(ev);
        sinks.send_to(ev, Some(mask));
    }
    let stats = sinks.shutdown().unwrap();
    let ids = stats
        .sinks
        .iter()
        .map(|s| {
            let path = s.sink.strip_prefix("file:").unwrap();
            fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
                .collect()
        })
        .collect();
    (ids, router)
}

const TREE: &str = r#"
[[route]]
name = "alerts"
sinks = ["file:DIR/alerts"]
kinds = ["finding"]
min_severity = "high"

[[route]]
name = "realtime"
sinks = ["file:DIR/realtime"]
kinds = ["tool.call", "process.exec", "file.open", "net.connect"]

[[route]]
name = "review"
sinks = ["file:DIR/review"]
keywords = ["Project Falcon"]
"#;

#[test]
fn each_sink_sees_only_its_route() {
    let mut tool = event(kind::TOOL_CALL, Severity::Info);
    tool.tool = Some(ToolCall {
        arguments: r#"{"q":"status of project falcon"}"#.into(),
        ..ToolCall::default()
    });
    let events = vec![
        event(kind::LLM_CALL, Severity::Info),
        finding("secret", Severity::Critical),
        finding("pii", Severity::Medium),
        tool.clone(),
        event(kind::FILE_OPEN, Severity::Info),
    ];
    let (ids, router) = run(TREE, &["file:DIR/archive"], &events);
    // Sinks start in order: archive (catch-all), alerts, realtime, review.
    let all: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids[0], all, "the archive takes everything");
    assert_eq!(ids[1], vec!["finding-secret-Critical"]);
    assert_eq!(ids[2], vec![tool.id.clone(), "file.open-Info".into()]);
    assert_eq!(ids[3], vec![tool.id], "keyword, any case");
    assert_eq!(router.unrouted, 0);
    assert_eq!(router.routed[0], ("alerts".into(), 1));
}

#[test]
fn last_stops_the_walk_and_unrouted_is_counted() {
    let tree = r#"
[[route]]
name = "secrets-only-here"
sinks = ["file:DIR/secrets"]
classes = ["secret"]
last = true

[[route]]
name = "findings"
sinks = ["file:DIR/findings"]
kinds = ["finding"]
"#;
    let events = vec![
        finding("secret", Severity::High),
        finding("prompt_injection", Severity::High),
        event(kind::LLM_CALL, Severity::Info),
    ];
    let (ids, router) = run(tree, &[], &events);
    assert_eq!(ids[0], vec!["finding-secret-High"]);
    assert_eq!(ids[1], vec!["finding-prompt_injection-High"]);
    assert_eq!(router.unrouted, 1, "the llm.call reached no sink");
}

#[test]
fn bad_routes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink: SinkSpec = format!("file:{}/a", dir.path().display()).parse().unwrap();
    let sinks = Sinks::start(std::slice::from_ref(&sink)).unwrap();
    let other = route("[[route]]\nname = \"x\"\nsinks = [\"stdout\"]\n");
    assert!(
        Router::new(&other, &[], &sinks).is_err(),
        "sink not running"
    );
    let none = route("[[route]]\nname = \"x\"\nsinks = []\n");
    assert!(Router::new(&none, &[], &sinks).is_err(), "no sinks");
    let unknown = "name = \"x\"\nsinks = [\"stdout\"]\nbogus = 1\n";
    assert!(
        toml::from_str::<RouteConfig>(unknown).is_err(),
        "unknown keys fail"
    );
}
