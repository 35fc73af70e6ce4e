//! A real Prometheus server (Debian's `prometheus` package, which `deploy/dev/prepare.sh`
//! installs) on a free loopback port, scraping the targets a test gives it every second, with
//! Nexus' alert rules loaded; asked through its HTTP API. Killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::process::{Process, free_tcp_port};

#[derive(Debug)]
pub struct Prometheus {
    process: Process,
    pub address: SocketAddr,
}

impl Prometheus {
    /// Starts a server in `dir` scraping each `(job, targets)`, with `rules` loaded.
    pub fn start(dir: &Path, jobs: &[(&str, Vec<SocketAddr>)], rules: &Path) -> Prometheus {
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n",
            rules.display()
        );
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("the Prometheus config");
        let address: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={address}"),
        ];
        let process = Process::spawn_program(&binary(), &args, dir.join("prometheus.log"));
        Prometheus { process, address }
    }

    /// The `data.result` of an instant query, or `None` while the server does not answer.
    pub async fn query(&self, promql: &str) -> Option<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", percent_encoded(promql));
        let (status, body) = crate::http::try_get(self.address, &path).await?;
        if status != 200 {
            return None;
        }
        let answer: Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"].as_array().cloned()
    }

    /// The names of the alerting rules the server loaded.
    pub async fn alert_rules(&self) -> Option<Vec<String>> {
        let (_, body) = crate::http::try_get(self.address, "/api/v1/rules?type=alert").await?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        Some(
            answer["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                .filter_map(|rule| rule["name"].as_str().map(str::to_string))
                .collect(),
        )
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The Prometheus binary: `$NEXUS_PROMETHEUS`, else `prometheus` on the `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("NEXUS_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

/// A query string's value, percent-encoded (RFC 3986 unreserved characters stay).
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::percent_encoded("sum by (le) (x{a=\"b\"})"),
            "sum%20by%20%28le%29%20%28x%7Ba%3D%22b%22%7D%29"
        );
    }
}
