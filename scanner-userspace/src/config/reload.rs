//! SIGHUP: read the configuration file again and apply it in place, without
//! detaching or losing state. What can only change with a restart (map
//! capacities, aggregation prefixes already in the maps) is named, not applied.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::config::settings::Settings;

/// What a reload changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Allowlist entries the file gained and lost (runtime `scanner allow`
    /// entries are not the file's, and stay).
    pub allow: Vec<IpNet>,
    pub disallow: Vec<IpNet>,
    /// Settings that need a restart to take effect.
    pub restart_needed: Vec<&'static str>,
}

pub(crate) fn plan(old: &Settings, new: &Settings) -> Plan {
    let set = |s: &Settings| -> BTreeSet<IpNet> {
        s.file.response.allowlist.iter().map(IpNet::trunc).collect()
    };
    let (before, after) = (set(old), set(new));
    let mut restart_needed = Vec::new();
    if old.file.detection.max_sources != new.file.detection.max_sources {
        restart_needed.push("detection.max_sources");
    }
    if old.file.signals != new.file.signals {
        restart_needed.push("signals");
    }
    if old.file.response.block_cap != new.file.response.block_cap {
        restart_needed.push("response.block_cap");
    }
    if old.file.aggregation != new.file.aggregation {
        restart_needed.push("aggregation");
    }
    // The memory thread is started (or not) with the daemon; its window
    // and thresholds change in place.
    if new.file.slow.enabled != old.file.slow.enabled {
        restart_needed.push("slow.enabled");
    }
    Plan {
        allow: after.difference(&before).copied().collect(),
        disallow: before.difference(&after).copied().collect(),
        restart_needed,
    }
}

/// One line for the `config_reloaded` event.
pub(crate) fn summary(new: &Settings, plan: &Plan) -> String {
    let d = &new.file.detection;
    let r = &new.file.response;
    let mut s = format!(
        "fanout {} ports in {:?}, blocking {}, block ttl {:?}, allowlist +{} -{}",
        d.fanout_ports,
        d.fanout_window,
        match (r.block, r.dry_run) {
            (_, true) => "dry run (nothing dropped)",
            (true, false) => "on",
            (false, false) => "off",
        },
        r.block_ttl,
        plan.allow.len(),
        plan.disallow.len()
    );
    if !plan.restart_needed.is_empty() {
        s.push_str(&format!(
            "; unchanged until restart: {}",
            plan.restart_needed.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, launch::Overrides};

    fn settings(text: &str) -> Settings {
        Settings::new(FileConfig::parse(text, "t").unwrap(), &Overrides::default())
    }

    #[test]
    fn allowlist_changes_are_a_diff() {
        let old = settings("[response]\nallowlist = [\"198.18.0.0/24\", \"198.18.1.1/32\"]\n");
        let new = settings("[response]\nallowlist = [\"198.18.1.1/32\", \"2001:db8::/64\"]\n");
        let p = plan(&old, &new);
        assert_eq!(p.allow, ["2001:db8::/64".parse::<IpNet>().unwrap()]);
        assert_eq!(p.disallow, ["198.18.0.0/24".parse::<IpNet>().unwrap()]);
        assert!(p.restart_needed.is_empty());
    }

    #[test]
    fn capacities_need_a_restart() {
        let old = settings("");
        let new = settings("[response]\nblock_cap = 10\n[detection]\nfanout_ports = 5\n");
        let p = plan(&old, &new);
        assert_eq!(p.restart_needed, ["response.block_cap"]);
        let line = summary(&new, &p);
        assert!(line.contains("fanout 5 ports"), "{line}");
        assert!(line.contains("until restart: response.block_cap"), "{line}");
    }

    #[test]
    fn a_dry_run_with_blocking_asked_for_says_dry_run() {
        let old = settings("");
        let new = settings("[response]\nblock = true\ndry_run = true\n");
        let line = summary(&new, &plan(&old, &new));
        assert!(
            line.contains("blocking dry run (nothing dropped)"),
            "{line}"
        );
        let on = settings("[response]\nblock = true\n");
        assert!(summary(&on, &plan(&old, &on)).contains("blocking on"));
    }
}
