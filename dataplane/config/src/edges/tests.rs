//! `edges` and `[<section>.selection]`: the forms that parse, the mistakes
//! refused with file, line and field.
use std::time::Duration;

use sluice_core::select::{Address, Failback, Settings};

use crate::{ConfigError, GatewayConfig, tests::dir};

/// The gateway and tunnel lines every fixture starts with.
const HEAD: &str = r#"
[gateway]
name = "branch-1"
lan = "lan0"
wan = "wan0"
"#;

/// Three edges, knobs, and a private tenant with its own edges.
const EDGES: &str = r#"
[tunnel]
edges = [
  { name = "fra", address = "198.51.100.5:4443" },
  { name = "ams", address = "edge-ams.example.net:4443" },
  { name = "backup", address = "[2001:db8::5]:4443", priority = 1 },
]
server_name = "edge.sluice.test"
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"

[tunnel.selection]
probe_interval_ms = 50
miss_count = 4
sample_size = 20
threshold = 0.5
min_improvement_ms = 15
standby = 2
stagger_ms = 250
failback = "after_stable"
failback_stable_secs = 30

[[tenant]]
name = "corp"
server_name = "corp-edge.test"
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"
segments = ["198.51.100.128/25"]

[[tenant.edges]]
name = "corp-1"
address = "corp-1.example.net:4443"

[[tenant.edges]]
name = "corp-2"
address = "203.0.113.9:4443"
priority = 2

[tenant.selection]
miss_count = 5
failback = "never"
"#;

fn parse(body: &str) -> Result<GatewayConfig, ConfigError> {
    let d = dir();
    let r = GatewayConfig::parse(&d.join("sluice.toml"), &format!("{HEAD}{body}"));
    std::fs::remove_dir_all(d).unwrap();
    r
}

#[test]
fn edge_lists_and_knobs_parse() {
    let c = parse(EDGES).unwrap();
    let t = &c.tunnel.edges;
    let names: Vec<_> = t.edges.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["fra", "ams", "backup"]);
    assert_eq!(
        t.edges[1].address,
        Address::Name {
            host: "edge-ams.example.net".into(),
            port: 4443
        }
    );
    assert_eq!(
        t.edges.iter().map(|e| e.priority).collect::<Vec<_>>(),
        [0, 0, 1]
    );
    assert_eq!(
        c.tunnel.edge,
        "198.51.100.5:4443".parse().unwrap(),
        "the best edge with an IP address"
    );
    let s = &t.settings;
    assert_eq!(s.probe_interval, Duration::from_millis(50));
    assert_eq!((s.miss_count, s.sample_size, s.standby), (4, 20, 2));
    assert!((s.threshold - 0.5).abs() < f64::EPSILON);
    assert_eq!(s.min_improvement, Duration::from_millis(15));
    assert_eq!(s.stagger, Duration::from_millis(250));
    assert_eq!(s.failback, Failback::AfterStable(Duration::from_secs(30)));
    // The tenant: its own edges (array-of-tables form); knobs it does not
    // give are the internet tenant's.
    let corp = &c.policy.tenants[0].tunnel;
    assert_eq!(corp.edges.edges.len(), 2);
    assert_eq!(corp.edges.edges[1].priority, 2);
    assert_eq!(corp.edge, "203.0.113.9:4443".parse().unwrap());
    let cs = &corp.edges.settings;
    assert_eq!((cs.miss_count, cs.sample_size), (5, 20));
    assert_eq!(cs.failback, Failback::Never);
    assert_eq!(cs.probe_interval, Duration::from_millis(50));
    // What the gateway will build from them.
    for set in [t, &corp.edges] {
        sluice_core::select::Selector::new(set, std::time::Instant::now()).unwrap();
    }
}

/// Today's single `edge` is a one-edge list with the default knobs, for
/// the internet tenant and for private tenants.
#[test]
fn a_single_edge_is_a_one_edge_list() {
    let body = r#"
[tunnel]
edge = "198.51.100.5:4443"
server_name = "edge.sluice.test"
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"

[[tenant]]
name = "corp"
edge = "198.51.100.8:4443"
server_name = "corp-edge.test"
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"
segments = ["198.51.100.128/25"]
"#;
    let c = parse(body).unwrap();
    for (t, addr) in [
        (&c.tunnel, "198.51.100.5:4443"),
        (&c.policy.tenants[0].tunnel, "198.51.100.8:4443"),
    ] {
        let addr = addr.parse().unwrap();
        assert_eq!(t.edge, addr);
        assert_eq!(t.edges, sluice_core::select::EdgeSet::single(addr));
        assert_eq!(t.edges.settings, Settings::default());
    }
    // Knobs apply to a single edge too (TOML lets `[tunnel.selection]`
    // come after other tables); an integer threshold is a number.
    let body = format!("{body}\n[tunnel.selection]\nthreshold = 1\nfailback = \"immediate\"\n");
    let c = parse(&body).unwrap();
    assert!((c.tunnel.edges.settings.threshold - 1.0).abs() < f64::EPSILON);
    assert_eq!(c.tunnel.edges.settings.failback, Failback::Immediate);
    assert_eq!(
        c.policy.tenants[0].tunnel.edges.settings.failback,
        Failback::Immediate,
        "inherited"
    );
}

/// `(what, from, to, field, line, message)`: replacing `from` by `to` in
/// [`EDGES`] is refused at `line` of the file (counting [`HEAD`]'s),
/// naming `field`, with `message` in the text.
const MISTAKES: &[(&str, &str, &str, &str, usize, &str)] = &[
    (
        "edge and edges",
        "[tunnel]\n",
        "[tunnel]\nedge = \"198.51.100.5:4443\"\n",
        "tunnel.edges",
        9,
        "not both",
    ),
    (
        "neither edge nor edges",
        "edges = [\n  { name = \"fra\", address = \"198.51.100.5:4443\" },\n  { name = \"ams\", address = \"edge-ams.example.net:4443\" },\n  { name = \"backup\", address = \"[2001:db8::5]:4443\", priority = 1 },\n]\n",
        "",
        "tunnel.edges",
        7,
        "missing field `edges`",
    ),
    (
        "an empty list",
        "edges = [\n  { name = \"fra\", address = \"198.51.100.5:4443\" },\n  { name = \"ams\", address = \"edge-ams.example.net:4443\" },\n  { name = \"backup\", address = \"[2001:db8::5]:4443\", priority = 1 },\n]",
        "edges = []",
        "tunnel.edges",
        8,
        "at least one edge",
    ),
    (
        "a bad name",
        "name = \"ams\"",
        "name = \"a m s\"",
        "tunnel.edges[1].name",
        10,
        "1 to 64 letters",
    ),
    (
        "a name twice",
        "name = \"ams\"",
        "name = \"fra\"",
        "tunnel.edges[1].name",
        10,
        "also tunnel.edges[0]",
    ),
    (
        "an address without port",
        "\"198.51.100.5:4443\"",
        "\"198.51.100.5\"",
        "tunnel.edges[0].address",
        9,
        "address:port",
    ),
    (
        "an IPv6 address without brackets",
        "\"[2001:db8::5]:4443\"",
        "\"2001:db8::5:4443\"",
        "tunnel.edges[2].address",
        11,
        "address:port",
    ),
    (
        "a bad name as address",
        "edge-ams.example.net:4443",
        "edge_ams.example.net:4443",
        "tunnel.edges[1].address",
        10,
        "address:port",
    ),
    (
        "an address twice",
        "\"[2001:db8::5]:4443\"",
        "\"198.51.100.5:4443\"",
        "tunnel.edges[2].address",
        11,
        "listed twice",
    ),
    (
        "a priority out of range",
        "priority = 1 }",
        "priority = 256 }",
        "tunnel.edges[2].priority",
        11,
        "0 (most preferred",
    ),
    (
        "only names",
        "\"198.51.100.5:4443\" },\n  { name = \"ams\", address = \"edge-ams.example.net:4443\" },\n  { name = \"backup\", address = \"[2001:db8::5]:4443\"",
        "\"fra.example.net:4443\" },\n  { name = \"ams\", address = \"edge-ams.example.net:4443\" },\n  { name = \"backup\", address = \"backup.example.net:4443\"",
        "tunnel.edges",
        8,
        "at least one edge needs an IP address",
    ),
    (
        "unknown knob",
        "probe_interval_ms = 50",
        "probe_interval = 50",
        "tunnel.selection.probe_interval",
        19,
        "unknown field",
    ),
    (
        "probe interval too short",
        "probe_interval_ms = 50",
        "probe_interval_ms = 5",
        "tunnel.selection.probe_interval_ms",
        19,
        "10 to 60000 (milliseconds)",
    ),
    (
        "no misses allowed",
        "miss_count = 4",
        "miss_count = 0",
        "tunnel.selection.miss_count",
        20,
        "1 to 100",
    ),
    (
        "sample size 0",
        "sample_size = 20",
        "sample_size = 0",
        "tunnel.selection.sample_size",
        21,
        "1 to 1000",
    ),
    (
        "threshold above 1",
        "threshold = 0.5",
        "threshold = 1.5",
        "tunnel.selection.threshold",
        22,
        "above 0 and at most 1",
    ),
    (
        "threshold 0",
        "threshold = 0.5",
        "threshold = 0.0",
        "tunnel.selection.threshold",
        22,
        "above 0 and at most 1",
    ),
    (
        "threshold nan",
        "threshold = 0.5",
        "threshold = nan",
        "tunnel.selection.threshold",
        22,
        "above 0 and at most 1",
    ),
    (
        "threshold as a string",
        "threshold = 0.5",
        "threshold = \"2/3\"",
        "tunnel.selection.threshold",
        22,
        "invalid type",
    ),
    (
        "improvement too large",
        "min_improvement_ms = 15",
        "min_improvement_ms = 60001",
        "tunnel.selection.min_improvement_ms",
        23,
        "0 to 60000",
    ),
    (
        "too many standbys",
        "standby = 2",
        "standby = 16",
        "tunnel.selection.standby",
        24,
        "0 to 15",
    ),
    (
        "negative standby",
        "standby = 2",
        "standby = -1",
        "tunnel.selection.standby",
        24,
        "invalid value",
    ),
    (
        "stagger too long",
        "stagger_ms = 250",
        "stagger_ms = 10001",
        "tunnel.selection.stagger_ms",
        25,
        "0 to 10000",
    ),
    (
        "unknown failback",
        "failback = \"after_stable\"",
        "failback = \"sometimes\"",
        "tunnel.selection.failback",
        26,
        "\"immediate\", \"after_stable\" or \"never\"",
    ),
    (
        "stable period with immediate failback",
        "failback = \"after_stable\"",
        "failback = \"immediate\"",
        "tunnel.selection.failback_stable_secs",
        27,
        "only with failback = \"after_stable\"",
    ),
    (
        "stable period 0",
        "failback_stable_secs = 30",
        "failback_stable_secs = 0",
        "tunnel.selection.failback_stable_secs",
        27,
        "1 to 86400 (seconds)",
    ),
    (
        "tenant: bad address",
        "corp-1.example.net:4443",
        "corp-1.example.net",
        "tenant[0].edges[0].address",
        39,
        "address:port",
    ),
    (
        "tenant: edge and edges",
        "name = \"corp\"\n",
        "name = \"corp\"\nedge = \"198.51.100.8:4443\"\n",
        "tenant[0].edges",
        38,
        "not both",
    ),
    (
        "tenant: only names",
        "\"203.0.113.9:4443\"",
        "\"corp-2.example.net:4443\"",
        "tenant[0].edges",
        37,
        "at least one edge needs an IP address",
    ),
    (
        "tenant: a knob out of range",
        "miss_count = 5",
        "miss_count = 101",
        "tenant[0].selection.miss_count",
        47,
        "1 to 100",
    ),
    (
        "tenant: stable period without after_stable",
        "failback = \"never\"",
        "failback = \"never\"\nfailback_stable_secs = 3",
        "tenant[0].selection.failback_stable_secs",
        49,
        "only with failback = \"after_stable\"",
    ),
];

#[test]
fn edge_mistakes_are_refused_precisely() {
    let d = dir();
    let path = d.join("sluice.toml");
    for &(what, from, to, field, line, msg) in MISTAKES {
        assert!(EDGES.contains(from), "{what}: fixture lacks {from:?}");
        let src = format!("{HEAD}{}", EDGES.replacen(from, to, 1));
        let err = GatewayConfig::parse(&path, &src).expect_err(&format!("{what}: accepted"));
        let text = err.to_string();
        assert_eq!(err.field(), Some(field), "{what}: {text}");
        assert_eq!(err.line(), Some(line), "{what}: {text}");
        assert!(text.contains(msg), "{what}: {text:?} lacks {msg:?}");
        assert!(
            text.starts_with(&format!("{}:{line}:", path.display())),
            "{what}: {text}"
        );
    }
    std::fs::remove_dir_all(d).unwrap();
}

/// More than [`sluice_core::select::MAX_EDGES`] edges are refused at the
/// first one too many.
#[test]
fn too_many_edges_are_refused() {
    let list: Vec<String> = (0..17)
        .map(|i| {
            format!(
                "  {{ name = \"e{i}\", address = \"198.51.100.{}:4443\" }},",
                i + 1
            )
        })
        .collect();
    let body = EDGES.replacen(
        "  { name = \"fra\", address = \"198.51.100.5:4443\" },\n  { name = \"ams\", address = \"edge-ams.example.net:4443\" },\n  { name = \"backup\", address = \"[2001:db8::5]:4443\", priority = 1 },",
        &list.join("\n"),
        1,
    );
    let err = parse(&body).unwrap_err();
    assert_eq!(err.field(), Some("tunnel.edges"), "{err}");
    assert!(err.to_string().contains("at most 16 edges"), "{err}");
    assert_eq!(err.line(), Some(9 + 16), "{err}");
}
