//! Tests for `sluice review`: logs generated in a temporary directory (plain,
//! gzip, truncated, with foreign lines), the JSON and Markdown reports, the
//! suggested patch (parsed back as TOML), the baseline, errors and exit
//! codes, and that memory stays flat as the log grows.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use super::read::{LineEnd, Skip, next_line, parse};
use super::*;

/// 2026-11-23T00:00:00Z, a Monday: the review's "now".
fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-11-23T00:00:00Z").unwrap()
}

/// An instant `hours` before [`now`].
fn before(hours: u64) -> SystemTime {
    now() - Duration::from_secs(hours * 3600)
}

fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One access-log line as the proxy writes it.
struct Line {
    at: SystemTime,
    agent: Option<&'static str>,
    host: &'static str,
    port: u16,
    decision: &'static str,
    rule: Option<&'static str>,
    reason: Option<&'static str>,
    up: u64,
    down: u64,
}

impl Line {
    fn new(agent: &'static str, host: &'static str, decision: &'static str) -> Self {
        Self {
            at: before(24),
            agent: Some(agent),
            host,
            port: 443,
            decision,
            rule: None,
            reason: None,
            up: 0,
            down: 0,
        }
    }
    fn allow(agent: &'static str, host: &'static str, rule: &'static str) -> Self {
        Self {
            rule: Some(rule),
            up: 100,
            down: 1000,
            ..Self::new(agent, host, "allow")
        }
    }
    fn deny(agent: &'static str, host: &'static str, reason: &'static str) -> Self {
        Self {
            reason: Some(reason),
            ..Self::new(agent, host, "deny")
        }
    }
    fn at(self, at: SystemTime) -> Self {
        Self { at, ..self }
    }
    fn port(self, port: u16) -> Self {
        Self { port, ..self }
    }
    fn json(&self) -> String {
        let mut v = json!({
            "ts": ts(self.at), "id": "0f3c9a", "agent": self.agent, "identity": "source",
            "src": "10.0.1.7:51234", "method": "CONNECT", "host": self.host, "port": self.port,
            "decision": self.decision, "mode": "enforce", "reason": self.reason, "status": 200,
            "ips": ["104.18.7.192"], "duration_ms": 12.5,
        });
        if let Some(rule) = self.rule {
            v["rule"] = json!(rule);
        }
        if self.decision != "deny" {
            v["bytes_up"] = json!(self.up);
            v["bytes_down"] = json!(self.down);
        }
        if self.decision == "report" {
            v["mode"] = json!("report");
        }
        v.to_string()
    }
}

fn text(lines: &[Line]) -> String {
    lines.iter().map(|l| l.json() + "\n").collect()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}

fn opts(format: Format) -> Options {
    Options {
        since: None,
        baseline: None,
        format,
        config: None,
        now: now(),
    }
}

fn review(opts: &Options, logs: &[PathBuf]) -> (String, Summary) {
    let mut out = Vec::new();
    let summary = run(opts, logs, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), summary)
}

fn review_json(opts: &Options, logs: &[PathBuf]) -> Report {
    let opts = Options {
        format: Format::Json,
        ..opts.clone()
    };
    serde_json::from_str(&review(&opts, logs).0).unwrap()
}

fn agent<'a>(r: &'a Report, name: &str) -> &'a AgentReport {
    r.agents.iter().find(|a| a.agent == name).unwrap()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn counts_destinations_per_agent() {
    let dir = tempdir();
    let log = text(&[
        Line::allow("orchestrator", "api.openai.com", "api.openai.com").at(before(30)),
        Line::allow("orchestrator", "api.openai.com", "api.openai.com").at(before(10)),
        Line::allow("orchestrator", "pypi.org", ".pypi.org"),
        Line::deny("orchestrator", "evil.example", "not_allowed"),
        Line::deny("orchestrator", "evil.example", "not_allowed"),
        Line::deny(
            "orchestrator",
            "gist.githubusercontent.com",
            "denied_by_rule",
        ),
        Line {
            reason: Some("dns_error"),
            rule: Some(".pypi.org"),
            ..Line::new("orchestrator", "gone.pypi.org", "error")
        },
        Line {
            agent: None,
            ..Line::deny("x", "api.openai.com", "unidentified")
        },
    ]);
    let path = write(dir.path(), "access.jsonl", log.as_bytes());
    let r = review_json(&opts(Format::Json), &[path]);
    assert_eq!(r.schema, SCHEMA);
    assert_eq!((r.lines, r.records, r.skipped), (8, 8, 0));
    assert_eq!(r.period.first.as_deref(), Some("2026-11-21T18:00:00Z"));
    assert_eq!(r.period.last.as_deref(), Some("2026-11-22T14:00:00Z"));
    let o = agent(&r, "orchestrator");
    assert_eq!(o.in_config, None);
    let top = &o.reached[0];
    assert_eq!(top.destination, "api.openai.com:443");
    assert_eq!((top.requests, top.bytes_up, top.bytes_down), (2, 200, 2000));
    assert_eq!(top.first_seen, "2026-11-21T18:00:00Z");
    assert_eq!(top.last_seen, "2026-11-22T14:00:00Z");
    assert_eq!(o.reached[1].destination, "pypi.org:443");
    assert_eq!(o.denied.len(), 2);
    assert_eq!(o.denied[0].destination, "evil.example:443");
    assert_eq!(o.denied[0].count, 2);
    assert_eq!(o.denied[0].reasons["not_allowed"], 2);
    assert_eq!(o.denied[1].reasons["denied_by_rule"], 1);
    assert_eq!(o.errors[0].reasons["dns_error"], 1);
    assert!(o.new_since_baseline.is_none() && o.unused_rules.is_none());
    // Requests without an agent come last, as "-", and never get a rule.
    let last = r.agents.last().unwrap();
    assert_eq!(last.agent, "-");
    assert_eq!(last.denied[0].reasons["unidentified"], 1);
    assert!(last.suggestions.is_empty());
}

#[test]
fn markdown_has_header_and_tables_sorted_by_volume() {
    let dir = tempdir();
    let mut lines = vec![Line::allow("ci", "crates.io", "crates.io")];
    lines.extend((0..3).map(|_| Line::allow("ci", "static.crates.io", "static.crates.io")));
    lines.push(Line::deny("ci", "evil.example", "not_allowed"));
    let path = write(dir.path(), "a.log", text(&lines).as_bytes());
    let (md, summary) = review(&opts(Format::Markdown), std::slice::from_ref(&path));
    assert_eq!(summary.records, 5);
    assert!(md.starts_with("# sluice review\n"), "{md}");
    assert!(
        md.contains("- Period: 2026-11-22T00:00:00Z to 2026-11-22T00:00:00Z"),
        "{md}"
    );
    assert!(
        md.contains(&format!("  - `{}`: 5 lines, 5 records", path.display())),
        "{md}"
    );
    assert!(
        md.contains("- Lines: 5 read, 5 counted, 0 skipped, 0 before --since"),
        "{md}"
    );
    assert!(md.contains("## Agent `ci`"), "{md}");
    let big = md
        .find("| static.crates.io:443 | 3 |  | 300 B | 2.9 KiB |")
        .unwrap();
    let small = md
        .find("| crates.io:443 | 1 |  | 100 B | 1000 B |")
        .unwrap();
    assert!(big < small, "sorted by requests: {md}");
    assert!(
        md.contains("| evil.example:443 | 1 | not_allowed (1) |"),
        "{md}"
    );
    assert!(md.contains("## Suggested patch\n\n```toml\n"), "{md}");
}

#[test]
fn gzip_is_recognised_by_magic_bytes_not_name() {
    let dir = tempdir();
    let one = text(&[Line::allow("ci", "a.example", "a.example")]);
    let two = text(&[Line::allow("ci", "b.example", "b.example")]);
    // Two members, as `cat a.gz b.gz` or a rotated-and-appended file makes.
    let mut members = gzip(one.as_bytes());
    members.extend(gzip(two.as_bytes()));
    let zipped = write(dir.path(), "access.log", &members);
    let plain = write(dir.path(), "access.log.gz", two.as_bytes());
    let r = review_json(&opts(Format::Json), &[plain, zipped]);
    assert_eq!((r.files[0].gzip, r.files[1].gzip), (false, true));
    assert_eq!(r.files[1].records, 2);
    let ci = agent(&r, "ci");
    assert_eq!(ci.reached[0].destination, "b.example:443");
    assert_eq!(ci.reached[0].requests, 2);
    assert_eq!(ci.reached[1].requests, 1);
}

#[test]
fn foreign_and_truncated_lines_are_counted_not_fatal() {
    let dir = tempdir();
    let good = Line::allow("ci", "a.example", "a.example").json();
    let huge = format!("{{\"msg\":\"{}\"}}", "x".repeat(70_000));
    let log = format!(
        "{good}\nlevel=info msg=\"starting\"\n{{\"level\":\"info\",\"msg\":\"hi\"}}\n\n[1,2]\n{huge}\n{good}\n{}",
        &good[..good.len() / 2]
    );
    let path = write(dir.path(), "mixed.log", log.as_bytes());
    let (md, summary) = review(&opts(Format::Markdown), std::slice::from_ref(&path));
    assert_eq!((summary.lines, summary.records, summary.skipped), (7, 2, 5));
    let expected = format!(
        "- skipped 5 lines in `{}` (1 not JSON, 2 JSON but not sluice records, \
         1 longer than 64 KiB, 1 truncated)",
        path.display()
    );
    assert!(md.contains(&expected), "{md}");
    let r = review_json(&opts(Format::Json), &[path]);
    let s = &r.files[0].skipped_by_cause;
    assert_eq!(
        (s.not_json, s.not_sluice, s.too_long, s.truncated),
        (1, 2, 1, 1)
    );
}

#[test]
fn complete_last_line_without_newline_counts() {
    let dir = tempdir();
    let log = Line::allow("ci", "a.example", "a.example").json();
    let path = write(dir.path(), "a.log", log.as_bytes());
    let (_, summary) = review(&opts(Format::Json), &[path]);
    assert_eq!((summary.records, summary.skipped), (1, 0));
}

#[test]
fn truncated_gzip_stream_keeps_what_was_decoded() {
    let dir = tempdir();
    let lines: Vec<Line> = (0..50)
        .map(|_| Line::allow("ci", "a.example", "a.example"))
        .collect();
    let mut zipped = gzip(text(&lines).as_bytes());
    zipped.truncate(zipped.len() - 4); // cut inside the trailer
    let path = write(dir.path(), "cut.gz", &zipped);
    let (md, _) = review(&opts(Format::Markdown), std::slice::from_ref(&path));
    assert!(md.contains("the gzip stream ends early"), "{md}");
    let r = review_json(&opts(Format::Json), &[path]);
    assert!(r.files[0].gzip_truncated);
    assert_eq!(r.files[0].records, 50);
}

#[test]
fn corrupt_gzip_is_invalid_input() {
    let dir = tempdir();
    let mut bad = gzip(text(&[Line::allow("ci", "a.example", "a.example")]).as_bytes());
    for b in bad.iter_mut().skip(10) {
        *b ^= 0x5a;
    }
    let path = write(dir.path(), "bad.gz", &bad);
    let err = run(
        &opts(Format::Json),
        std::slice::from_ref(&path),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ReviewError::CorruptGzip { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn unreadable_log_is_a_runtime_error_naming_the_file() {
    let dir = tempdir();
    let missing = dir.path().join("missing.log");
    let err = run(
        &opts(Format::Json),
        std::slice::from_ref(&missing),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        format!("{}: cannot read access log", missing.display())
    );
    // A directory opens but cannot be read.
    let err = run(
        &opts(Format::Json),
        &[dir.path().to_path_buf()],
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn since_filters_by_timestamp() {
    let dir = tempdir();
    let log = text(&[
        Line::allow("ci", "old.example", "old.example").at(before(24 * 10)),
        Line::allow("ci", "new.example", "new.example").at(before(1)),
    ]);
    let path = write(dir.path(), "a.log", log.as_bytes());
    let o = Options {
        since: Some(before(24 * 7)),
        ..opts(Format::Json)
    };
    let r = review_json(&o, &[path]);
    assert_eq!((r.records, r.before_since), (1, 1));
    assert_eq!(r.period.since.as_deref(), Some("2026-11-16T00:00:00Z"));
    let ci = agent(&r, "ci");
    assert_eq!(ci.reached.len(), 1);
    assert_eq!(ci.reached[0].destination, "new.example:443");
}

#[test]
fn baseline_marks_new_destinations() {
    let dir = tempdir();
    let last_week = text(&[
        Line::allow("ci", "a.example", "a.example"),
        Line::deny("ci", "x.example", "not_allowed"),
    ]);
    let this_week = text(&[
        Line::allow("ci", "a.example", "a.example"),
        Line::allow("ci", "b.example", "b.example"),
        Line::deny("ci", "x.example", "not_allowed"),
        Line::deny("ci", "y.example", "not_allowed"),
        Line::allow("web", "c.example", "c.example"),
    ]);
    let old = write(dir.path(), "old.log", last_week.as_bytes());
    let new = write(dir.path(), "new.log", this_week.as_bytes());
    let (baseline, _) = review(&opts(Format::Json), &[old]);
    let baseline = write(dir.path(), "baseline.json", baseline.as_bytes());
    let o = Options {
        baseline: Some(baseline.clone()),
        ..opts(Format::Markdown)
    };
    let r = review_json(&o, std::slice::from_ref(&new));
    let ci = agent(&r, "ci").new_since_baseline.clone().unwrap();
    let ci: Vec<(&str, &str)> = ci
        .iter()
        .map(|n| (n.destination.as_str(), n.kind.as_str()))
        .collect();
    assert_eq!(
        ci,
        [("b.example:443", "reached"), ("y.example:443", "denied")]
    );
    let web = agent(&r, "web").new_since_baseline.clone().unwrap();
    assert_eq!(web[0].destination, "c.example:443");
    let (md, _) = review(&o, &[new]);
    assert!(
        md.contains("### New since the baseline (2)\n\n| destination | kind | count |"),
        "{md}"
    );
    assert!(md.contains("| b.example:443 | reached | 1 |"), "{md}");
}

#[test]
fn malformed_baseline_is_invalid_input() {
    let dir = tempdir();
    let log = write(dir.path(), "a.log", b"");
    for (name, content) in [
        ("junk.json", "not json"),
        ("other.json", r#"{"schema":"x/9","agents":[]}"#),
    ] {
        let path = write(dir.path(), name, content.as_bytes());
        let o = Options {
            baseline: Some(path.clone()),
            ..opts(Format::Json)
        };
        let err = run(&o, std::slice::from_ref(&log), &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 1, "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: not a sluice review", path.display())),
            "{err}"
        );
    }
    let o = Options {
        baseline: Some(dir.path().join("absent.json")),
        ..opts(Format::Json)
    };
    let err = run(&o, &[log], &mut Vec::new()).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn report_mode_is_reached_and_would_be_denied() {
    let dir = tempdir();
    let report = |host| Line {
        reason: Some("not_allowed"),
        up: 10,
        down: 20,
        ..Line::new("scanner", host, "report")
    };
    let log = text(&[report("api.osv.dev"), report("api.osv.dev")]);
    let path = write(dir.path(), "a.log", log.as_bytes());
    let r = review_json(&opts(Format::Json), &[path]);
    let s = agent(&r, "scanner");
    assert_eq!((s.reached[0].requests, s.reached[0].reported), (2, 2));
    assert_eq!(s.reached[0].bytes_down, 40);
    assert_eq!(s.would_deny[0].reasons["not_allowed"], 2);
    assert!(s.denied.is_empty());
    assert_eq!(s.suggestions[0].rule, "api.osv.dev");
    assert_eq!(
        s.suggestions[0].reason,
        "seen 2 times, would be denied as not_allowed (report mode)"
    );
}

#[test]
fn suggested_patch_is_valid_toml_with_the_right_entries() {
    let dir = tempdir();
    let mut lines = Vec::new();
    // Three names under one registrable domain: one ".domain" rule.
    for host in ["eu.cdn.example.com", "us.cdn.example.com", "example.com"] {
        lines.push(Line::deny("ci", host, "not_allowed"));
    }
    lines.push(Line::deny("ci", "us.cdn.example.com", "not_allowed"));
    // Two names: one exact rule each.
    lines.push(Line::deny("ci", "a.other.org", "not_allowed"));
    lines.push(Line::deny("ci", "b.other.org", "not_allowed"));
    // A non-default port.
    lines.push(Line::deny("ci", "db.other.net", "not_allowed").port(5432));
    // Never suggested.
    lines.push(Line::deny("ci", "203.0.113.9", "not_allowed"));
    lines.push(Line::deny("ci", "github.io", "not_allowed"));
    lines.push(Line::deny("ci", "evil.example", "denied_by_rule"));
    lines.push(Line::deny(
        "ci",
        "internal.example",
        "destination_ip_prohibited",
    ));
    lines.push(Line::deny("ci", "bad", "malformed"));
    lines.push(Line::deny("web", "already.example", "not_allowed"));
    let path = write(dir.path(), "a.log", text(&lines).as_bytes());
    let config = ReviewConfig {
        ports: vec![80, 443],
        agents: vec![AgentRules {
            name: "web".into(),
            allow: vec![rule("already.example", None)],
            deny: vec![],
        }],
    };
    let o = Options {
        config: Some(config),
        ..opts(Format::Json)
    };
    let r = review_json(&o, &[path]);
    let ci = agent(&r, "ci");
    let rules: Vec<&str> = ci.suggestions.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            ".example.com",
            "a.other.org",
            "b.other.org",
            "db.other.net:5432"
        ]
    );
    assert_eq!(
        ci.suggestions[0].reason,
        "seen 4 times across 3 names (eu.cdn.example.com, example.com, us.cdn.example.com), \
         denied as not_allowed"
    );
    let skipped: Vec<(&str, &str)> = ci
        .not_suggested
        .iter()
        .map(|n| (n.destination.as_str(), n.why.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("203.0.113.9:443", "ip_literal"),
            ("github.io:443", "public_suffix")
        ]
    );
    assert_eq!(agent(&r, "web").not_suggested[0].why, "already_in_config");

    let patch: toml::Table = toml::from_str(&r.patch).unwrap();
    let agents = patch["agent"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"].as_str(), Some("ci"));
    let allow = agents[0]["allow"].as_array().unwrap();
    assert_eq!(allow.len(), 4);
    let first = allow[0].as_table().unwrap();
    assert_eq!(first["rule"].as_str(), Some(".example.com"));
    assert_eq!(first["owner"].as_str(), Some("TODO"));
    assert_eq!(first["expires"].as_str(), Some("2027-02-21"));
    assert_eq!(
        allow[1]["reason"].as_str(),
        Some("seen once, denied as not_allowed")
    );
    assert_eq!(allow[3]["rule"].as_str(), Some("db.other.net:5432"));
    assert!(
        r.patch
            .contains("# merge into the allow list of agent \"ci\""),
        "{}",
        r.patch
    );
}

#[test]
fn hostile_log_content_cannot_break_the_patch_or_tables() {
    let dir = tempdir();
    let line = json!({
        "ts": ts(before(1)), "agent": "a\"b\n[x]", "host": "x.example", "port": 443,
        "decision": "deny", "reason": "not_allowed",
    });
    let pipe = json!({
        "ts": ts(before(1)), "agent": "ci", "host": "a|b", "port": 443,
        "decision": "deny", "reason": "not_allowed",
    });
    let path = write(dir.path(), "a.log", format!("{line}\n{pipe}\n").as_bytes());
    let r = review_json(&opts(Format::Json), std::slice::from_ref(&path));
    let patch: toml::Table = toml::from_str(&r.patch).unwrap();
    assert_eq!(patch["agent"][0]["name"].as_str(), Some("a\"b\n[x]"));
    assert_eq!(agent(&r, "ci").not_suggested[0].why, "invalid_name");
    let (md, _) = review(&opts(Format::Markdown), &[path]);
    assert!(md.contains("| a\\|b:443 | 1 |"), "{md}");
}

fn rule(text: &str, expires: Option<SystemTime>) -> RuleInfo {
    RuleInfo {
        text: text.into(),
        owner: Some("platform".into()),
        reason: Some("needed".into()),
        expires,
    }
}

#[test]
fn unused_and_expiring_rules_come_from_the_config() {
    let dir = tempdir();
    let log = text(&[
        Line::allow("ci", "api.github.com", "api.github.com"),
        Line {
            reason: Some("connection_refused"),
            rule: Some(".pypi.org"),
            ..Line::new("ci", "files.pypi.org", "error")
        },
    ]);
    let path = write(dir.path(), "a.log", log.as_bytes());
    let day = Duration::from_secs(86_400);
    let config = ReviewConfig {
        ports: vec![443],
        agents: vec![
            AgentRules {
                name: "ci".into(),
                allow: vec![
                    rule("api.github.com", Some(now() + 3 * day)),
                    rule(".pypi.org", None),
                    rule("old.example", Some(now() - day)),
                    rule("later.example", Some(now() + 30 * day)),
                ],
                deny: vec![rule("gist.github.com", Some(now() + 10 * day))],
            },
            AgentRules {
                name: "idle".into(),
                allow: vec![rule("x.example", None)],
                deny: vec![],
            },
        ],
    };
    let o = Options {
        config: Some(config),
        ..opts(Format::Json)
    };
    let r = review_json(&o, std::slice::from_ref(&path));
    let ci = agent(&r, "ci");
    assert_eq!(ci.in_config, Some(true));
    let unused: Vec<&str> = ci
        .unused_rules
        .as_ref()
        .unwrap()
        .iter()
        .map(|u| u.rule.as_str())
        .collect();
    assert_eq!(unused, ["old.example", "later.example"]);
    let expiring: Vec<(&str, &str, bool)> = ci
        .expiring_rules
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.rule.as_str(), e.list.as_str(), e.expired))
        .collect();
    assert_eq!(
        expiring,
        [
            ("old.example", "allow", true),
            ("api.github.com", "allow", false),
            ("gist.github.com", "deny", false)
        ]
    );
    assert_eq!(
        ci.expiring_rules.as_ref().unwrap()[0].owner.as_deref(),
        Some("platform")
    );
    // A configured agent without traffic is still reviewed.
    let idle = agent(&r, "idle");
    assert_eq!(idle.unused_rules.as_ref().unwrap()[0].rule, "x.example");
    let (md, _) = review(
        &Options {
            format: Format::Markdown,
            ..o
        },
        &[path],
    );
    assert!(
        md.contains("| old.example | allow | platform | 2026-11-22T00:00:00Z | expired |"),
        "{md}"
    );
    assert!(
        md.contains("### Allow rules that matched nothing (2)"),
        "{md}"
    );
}

#[test]
fn since_accepts_a_date_or_a_time() {
    let day = humantime::parse_rfc3339("2026-11-16T00:00:00Z").unwrap();
    assert_eq!(parse_since("2026-11-16"), Some(day));
    assert_eq!(parse_since("2026-11-16T00:00:00Z"), Some(day));
    assert_eq!(
        parse_since("2026-11-16T06:00:00.5Z"),
        Some(day + Duration::from_millis(21_600_500))
    );
    for bad in ["", "last week", "2026-13-01", "2026-11-1", "16/11/2026"] {
        assert_eq!(parse_since(bad), None, "{bad}");
    }
}

#[test]
fn lines_are_bounded() {
    let long = "x".repeat(100);
    let input = format!("short\n{long}\nok\ntail");
    let mut r = Cursor::new(input.into_bytes());
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Some(end) = next_line(&mut r, &mut buf, 10).unwrap() {
        got.push((String::from_utf8(buf.clone()).unwrap(), end));
    }
    let expect = [
        ("short", LineEnd::Newline),
        ("", LineEnd::TooLong),
        ("ok", LineEnd::Newline),
        ("tail", LineEnd::Eof),
    ];
    let got: Vec<(&str, LineEnd)> = got.iter().map(|(s, e)| (s.as_str(), *e)).collect();
    assert_eq!(got, expect);
}

#[test]
fn parse_tells_foreign_lines_apart() {
    assert_eq!(parse(b"hello").unwrap_err(), Skip::NotJson);
    assert_eq!(
        parse(br#"{"ts":"2026-11-22T10:15:02.113Z""#).unwrap_err(),
        Skip::NotJson
    );
    assert_eq!(parse(br#"{"msg":"x"}"#).unwrap_err(), Skip::NotSluice);
    assert_eq!(
        parse(br#"{"ts":"yesterday","decision":"allow"}"#).unwrap_err(),
        Skip::NotSluice
    );
    assert_eq!(
        parse(br#"{"ts":"2026-11-22T10:15:02Z","decision":"maybe"}"#).unwrap_err(),
        Skip::NotSluice
    );
    assert_eq!(
        parse(br#"{"ts":"2026-11-22T10:15:02Z","decision":"deny","port":"x"}"#).unwrap_err(),
        Skip::NotSluice
    );
    let rec = parse(
        br#"{"ts":"2026-11-22T10:15:02.113Z","agent":null,"decision":"deny","host":"a\u002eb"}"#,
    )
    .unwrap();
    assert_eq!(rec.agent, None);
    assert_eq!(rec.host.as_deref(), Some("a.b"));
}

// === flat memory ===

/// Set in the child process that measures memory on its own.
const RSS_CHILD: &str = "SLUICE_REVIEW_RSS_CHILD";

/// Runs [`flat_memory_child`] alone in a fresh process: peak RSS is
/// process-wide, and other tests running in parallel threads would blur it.
#[test]
fn memory_stays_flat_as_the_log_grows() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "review::tests::flat_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(RSS_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child did not run: {stdout}"
    );
}

/// Reviews a 20 MB log, then the same log grown to 200 MB with the same
/// destinations, and checks that the second review's peak RSS is no higher
/// than the first's (within allocator noise). About 5 s in a debug build.
#[test]
#[ignore = "run by memory_stays_flat_as_the_log_grows in its own process"]
fn flat_memory_child() {
    if std::env::var_os(RSS_CHILD).is_none() {
        return;
    }
    let dir = tempdir();
    let path = dir.path().join("big.log");
    let lines = big_lines();
    let mut written = 0;
    written += append(&path, &lines, 20 << 20, written);
    let start = peak_rss();
    let first = review(&opts(Format::Json), std::slice::from_ref(&path)).1;
    let after_small = peak_rss();
    written += append(&path, &lines, 200 << 20, written);
    let second = review(&opts(Format::Json), std::slice::from_ref(&path)).1;
    let after_large = peak_rss();
    println!(
        "review of {written} bytes: peak RSS {start} KiB before, {after_small} KiB after 20 MB \
         ({} lines), {after_large} KiB after 200 MB ({} lines)",
        first.lines, second.lines
    );
    assert!(second.lines >= 10 * first.lines - 10);
    // 4 MiB: a few read buffers' worth of allocator noise, far below the
    // 180 MB the log grew by.
    assert!(
        after_large <= after_small + 4096,
        "{after_small} KiB -> {after_large} KiB"
    );
    assert!(
        after_small <= start + 16 * 1024,
        "{start} KiB -> {after_small} KiB"
    );
}

/// A few hundred distinct lines (3 agents × 60 destinations), each with a
/// long path as plain-HTTP requests have, so that megabytes go by quickly.
fn big_lines() -> Vec<String> {
    let path = "/".to_owned() + &"p".repeat(700);
    let mut lines = Vec::new();
    for agent in ["ci", "web", "scanner"] {
        for i in 0..60 {
            let v = json!({
                "ts": ts(before(i % 24)), "id": "0f3c9a", "agent": agent, "identity": "source",
                "src": "10.0.1.7:51234", "method": "GET", "host": format!("h{i}.example"),
                "port": 80, "path": path, "decision": if i % 3 == 0 { "deny" } else { "allow" },
                "rule": "x", "reason": if i % 3 == 0 { Some("not_allowed") } else { None },
                "status": 200, "bytes_up": 1, "bytes_down": 2, "duration_ms": 1.0,
            });
            lines.push(v.to_string() + "\n");
        }
    }
    lines
}

/// Appends lines (cycling) until the file holds `target` bytes; returns
/// the bytes written.
fn append(path: &Path, lines: &[String], target: usize, mut size: usize) -> usize {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut w = std::io::BufWriter::new(file);
    let start = size;
    for line in lines.iter().cycle() {
        if size >= target {
            break;
        }
        w.write_all(line.as_bytes()).unwrap();
        size += line.len();
    }
    w.flush().unwrap();
    size - start
}

/// Peak resident set size of this process, in KiB (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// === the sample in docs/review.md ===

/// The week shown in docs/review.md: run with `--nocapture` to print it.
#[test]
fn sample_week_for_the_docs() {
    let dir = tempdir();
    let day = Duration::from_secs(86_400);
    let last_week = text(&[
        Line::allow("orchestrator", "api.openai.com", "api.openai.com").at(before(24 * 9)),
        Line::allow("orchestrator", "pypi.org", ".pypi.org").at(before(24 * 9)),
    ]);
    let old = write(dir.path(), "access-2026-11-15.jsonl", last_week.as_bytes());
    let (baseline, _) = review(&opts(Format::Json), &[old]);
    let baseline = write(dir.path(), "review-2026-11-16.json", baseline.as_bytes());

    let mut week = Vec::new();
    for h in [150, 100, 50, 20, 2] {
        week.push(Line {
            up: 18_340,
            down: 912_330,
            ..Line::allow("orchestrator", "api.openai.com", "api.openai.com").at(before(h))
        });
    }
    week.push(Line::allow("orchestrator", "pypi.org", ".pypi.org").at(before(70)));
    week.push(
        Line::allow(
            "orchestrator",
            "files.pythonhosted.org",
            "files.pythonhosted.org",
        )
        .at(before(69)),
    );
    for (h, host) in [
        (60, "eu-1.cdn.acme.dev"),
        (40, "us-2.cdn.acme.dev"),
        (30, "ap-3.cdn.acme.dev"),
        (5, "us-2.cdn.acme.dev"),
    ] {
        week.push(Line::deny("orchestrator", host, "not_allowed").at(before(h)));
    }
    week.push(
        Line::deny(
            "orchestrator",
            "gist.githubusercontent.com",
            "denied_by_rule",
        )
        .at(before(33)),
    );
    week.push(
        Line::deny(
            "orchestrator",
            "metadata.internal.example",
            "destination_ip_prohibited",
        )
        .at(before(12)),
    );
    week.push(
        Line::deny("orchestrator", "10.20.0.7", "not_allowed")
            .port(5432)
            .at(before(11)),
    );
    week.push(Line {
        reason: Some("dns_error"),
        rule: Some(".pypi.org"),
        ..Line::new("orchestrator", "test.pypi.org", "error").at(before(8))
    });
    for h in [90, 3] {
        week.push(Line {
            reason: Some("not_allowed"),
            up: 2_100,
            down: 45_000,
            ..Line::new(
                "security-scanner",
                "osv-vulnerabilities.storage.googleapis.com",
                "report",
            )
            .at(before(h))
        });
    }
    week.push(Line {
        agent: None,
        ..Line::deny("-", "example.net", "unidentified").at(before(4))
    });
    let (first, second) = week.split_at(9);
    let plain = format!("level=info msg=\"sluice starting\"\n{}", text(first));
    let plain = write(dir.path(), "access.jsonl.1", plain.as_bytes());
    let zipped = write(
        dir.path(),
        "access.jsonl.2.gz",
        &gzip(text(second).as_bytes()),
    );

    let rule = |text: &str, owner: &str, expires: Option<SystemTime>| RuleInfo {
        text: text.into(),
        owner: Some(owner.into()),
        reason: None,
        expires,
    };
    let config = ReviewConfig {
        ports: vec![80, 443],
        agents: vec![
            AgentRules {
                name: "orchestrator".into(),
                allow: vec![
                    rule("api.openai.com", "ml-platform", None),
                    rule(".pypi.org", "ml-platform", None),
                    rule(
                        "files.pythonhosted.org",
                        "ml-platform",
                        Some(now() + 9 * day),
                    ),
                    rule(
                        "*.githubusercontent.com",
                        "dev-tools",
                        Some(now() - 2 * day),
                    ),
                ],
                deny: vec![rule("gist.githubusercontent.com", "appsec", None)],
            },
            AgentRules {
                name: "security-scanner".into(),
                allow: vec![rule("api.osv.dev", "appsec", Some(now() + 120 * day))],
                deny: vec![],
            },
        ],
    };
    let o = Options {
        since: Some(now() - 7 * day),
        baseline: Some(baseline),
        format: Format::Markdown,
        config: Some(config),
        now: now(),
    };
    let logs = [plain, zipped];
    let (md, summary) = review(&o, &logs);
    println!("{md}");
    let json = Options {
        format: Format::Json,
        ..o.clone()
    };
    println!("{}", review(&json, &logs).0);
    assert_eq!(
        (summary.records, summary.skipped, summary.suggestions),
        (18, 1, 2)
    );
    assert!(
        md.contains("| .acme.dev | 4 | seen 4 times across 3 names"),
        "{md}"
    );
    assert!(
        md.contains("| osv-vulnerabilities.storage.googleapis.com | 2 | seen 2 times, would be denied as not_allowed (report mode) |"),
        "{md}"
    );
    assert!(
        md.contains("- `10.20.0.7:5432` (once): an IP literal"),
        "{md}"
    );
}

/// A tunnel refused as `sni_mismatch` logs the server name the agent tried:
/// the review lists those names under the destination (what a fronting
/// attempt was after), keeps at most 16 distinct ones, and never lets a
/// name carry a terminal escape into the Markdown.
#[test]
fn names_tried_through_a_destination_are_listed_capped_and_escaped() {
    let dir = tempdir();
    let line = |sni: &str| {
        let mut v: serde_json::Value =
            serde_json::from_str(&Line::deny("ci", "api.example.com", "sni_mismatch").json())
                .unwrap();
        v["sni"] = json!(sni);
        v.to_string() + "\n"
    };
    let mut log = String::new();
    for sni in [
        "evil.example",
        "evil.example",
        "other.example",
        "\u{1b}[2J|x",
    ] {
        log.push_str(&line(sni));
    }
    for i in 0..20 {
        log.push_str(&line(&format!("n{i}.example")));
    }
    let path = write(dir.path(), "a.log", log.as_bytes());
    let r = review_json(&opts(Format::Json), std::slice::from_ref(&path));
    let denied = &agent(&r, "ci").denied[0];
    assert_eq!((denied.count, denied.reasons["sni_mismatch"]), (24, 24));
    assert_eq!(denied.names_tried["evil.example"], 2);
    assert_eq!(denied.names_tried["other.example"], 1);
    assert_eq!(denied.names_tried.len(), 17, "{:?}", denied.names_tried);
    assert_eq!(denied.names_tried["(other names)"], 7);

    let (md, _) = review(&opts(Format::Markdown), &[path]);
    let row = md
        .lines()
        .find(|l| l.starts_with("| api.example.com:443 |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        row.contains("sni_mismatch (24); SNI tried: (other names) (7), evil.example (2), "),
        "most tried first: {row}"
    );
    assert!(!md.contains('\u{1b}'), "an escape reached the Markdown");
    assert!(row.contains(" [2J\\|x (1)"), "{row}");
}
