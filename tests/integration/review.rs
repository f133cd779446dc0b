//! `sluice review` end to end, through the binary: its suggested allow
//! entries, merged into the configuration, pass `check` and allow exactly
//! the destinations that were denied (per `explain`), nothing more.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

const CONFIG: &str = r#"
[[agent]]
name = "ci"
sources = ["10.0.1.0/24"]
allow = ["api.example.com"]
#ALLOW#
"#;

fn line(host: &str, port: u16, decision: &str, reason: Option<&str>) -> String {
    let reason = reason.map_or("null".to_owned(), |r| format!("\"{r}\""));
    format!(
        "{{\"ts\":\"2026-11-20T10:00:00.000Z\",\"id\":\"x\",\"agent\":\"ci\",\"identity\":\"source\",\
         \"src\":\"10.0.1.7:1\",\"method\":\"CONNECT\",\"host\":\"{host}\",\"port\":{port},\
         \"decision\":\"{decision}\",\"mode\":\"enforce\",\"reason\":{reason},\"status\":403,\"duration_ms\":1.0}}\n"
    )
}

fn explain(config: &Path, dest: &str) -> i32 {
    let out = Command::new(BIN)
        .args(["explain", "--no-dns", "--agent", "ci", "--config"])
        .arg(config)
        .arg(dest)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

#[test]
fn suggested_patch_applied_passes_check_and_allows_exactly_the_denials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG.replace("#ALLOW#", "")).unwrap();
    let mut log = String::new();
    for _ in 0..3 {
        log += &line("pypi.org", 443, "deny", Some("not_allowed"));
    }
    log += &line("files.example.net", 8443, "deny", Some("not_allowed"));
    // Never suggested: forbidden addresses, deny rules, malformed requests.
    log += &line(
        "metadata.internal.example",
        443,
        "deny",
        Some("destination_ip_prohibited"),
    );
    log += &line("evil.example", 443, "deny", Some("denied_by_rule"));
    log += &line("api.example.com", 443, "allow", None);
    std::fs::write(dir.path().join("access.jsonl"), log).unwrap();

    let out = Command::new(BIN)
        .args(["review", "--format", "json", "--config"])
        .arg(&config)
        .arg(dir.path().join("access.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "ci")
        .unwrap();
    let mut rules: Vec<String> = agent["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule"].as_str().unwrap().to_owned())
        .collect();
    rules.sort();
    assert_eq!(rules, ["files.example.net:8443", "pypi.org"]);

    // Merge the suggested entries (as the patch writes them) into the agent's allow list.
    let patch = report["patch"].as_str().unwrap();
    let entries: Vec<&str> = patch
        .lines()
        .filter(|l| l.trim_start().starts_with("{ rule"))
        .collect();
    assert_eq!(entries.len(), 2, "{patch}");
    let merged = CONFIG.replace(
        "allow = [\"api.example.com\"]\n#ALLOW#",
        &format!("allow = [\"api.example.com\",\n{}\n]", entries.join("\n")),
    );
    std::fs::write(&config, merged).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    assert_eq!(explain(&config, "pypi.org:443"), 0);
    assert_eq!(explain(&config, "files.example.net:8443"), 0);
    // Exactly those: not other ports, not subdomains, not the refusals that were never suggested.
    assert_eq!(explain(&config, "pypi.org:8080"), 3);
    assert_eq!(explain(&config, "files.example.net:443"), 3);
    assert_eq!(explain(&config, "www.pypi.org:443"), 3);
    assert_eq!(explain(&config, "evil.example:443"), 3);
    assert_eq!(explain(&config, "metadata.internal.example:443"), 3);
}
