//! netplan: which interfaces each netplan file configures, and how.
//!
//! Files are read with a YAML 1.2 parser (`saphyr`), so anything YAML
//! allows — flow collections over several lines, quoted keys, anchors and
//! aliases, several documents — reads as netplan itself reads it. Scalars
//! are kept as written (`yes`, `on`, `1.10`), not resolved to booleans or
//! numbers, because netplan spells booleans the YAML 1.1 way. `retarget`
//! does not use this: it edits netplan files line by line to keep their
//! comments and layout.

use saphyr::{ScanError, Yaml as Node, YamlLoader};
use saphyr_parser::Parser;

use super::{IfaceConfig, parse_bool};
use crate::util::mac::normalize as normalize_mac;

/// A YAML node as this reader uses it: mappings in document order, and
/// every scalar as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    fn is_true(&self) -> bool {
        self.as_str().and_then(parse_bool).unwrap_or(false)
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence; a lone scalar counts as a one-item list.
    fn items(&self) -> Vec<&Yaml> {
        match self {
            Yaml::Seq(items) => items.iter().collect(),
            Yaml::Str(s) if !s.is_empty() => vec![self],
            _ => Vec::new(),
        }
    }

    /// From the parser's node. Tags are dropped (netplan uses none); a
    /// mapping key that is itself a collection names nothing netplan knows
    /// and is left out.
    fn from_node(node: &Node) -> Yaml {
        match node {
            Node::Representation(text, _, _) => Yaml::Str(text.to_string()),
            Node::Mapping(map) => Yaml::Map(
                map.iter()
                    .filter_map(|(k, v)| Some((Yaml::from_node(k).as_str()?.to_string(), v)))
                    .map(|(k, v)| (k, Yaml::from_node(v)))
                    .collect(),
            ),
            Node::Sequence(items) => Yaml::Seq(items.iter().map(Yaml::from_node).collect()),
            Node::Tagged(_, inner) => Yaml::from_node(inner),
            // Resolved scalars (not produced with early parsing off), an
            // alias the loader could not resolve, a bad value: no text.
            Node::Value(_) | Node::Alias(_) | Node::BadValue => Yaml::Str(String::new()),
        }
    }
}

/// Parse a YAML stream; the mappings of several documents are merged, later
/// keys winning, as for a key repeated within one mapping.
fn parse_yaml(text: &str) -> Result<Yaml, ScanError> {
    let mut loader = YamlLoader::<Node>::default();
    loader.early_parse(false);
    // netplan (libyaml) takes the last of repeated keys; so do we.
    loader.allow_duplicate_keys(true);
    Parser::new_from_str(text).load(&mut loader, true)?;
    if let Some(e) = loader.error() {
        return Err(e.clone());
    }
    let mut entries = Vec::new();
    for doc in loader.into_documents() {
        if let Yaml::Map(e) = Yaml::from_node(&doc) {
            entries.extend(e);
        }
    }
    Ok(Yaml::Map(entries))
}

/// The interface definitions of one netplan file: every device under
/// `network:` (ethernets, bonds, bridges, vlans, wifis...). An error when the
/// file is not YAML (netplan refuses such a file too).
pub(crate) fn parse_netplan(text: &str) -> Result<Vec<IfaceConfig>, ScanError> {
    let doc = parse_yaml(text)?;
    let Some(network) = doc.get("network") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (_, devices) in network.entries() {
        for (id, dev) in devices.entries() {
            if !matches!(dev, Yaml::Map(_)) {
                continue;
            }
            let mut cfg = IfaceConfig::default();
            match (dev.get("match"), dev.get("set-name").and_then(Yaml::as_str)) {
                // The device is renamed to set-name: that is its kernel name.
                (Some(_), Some(name)) => cfg.names.push(name.to_string()),
                (Some(m), None) => {
                    cfg.names
                        .extend(m.get("name").and_then(Yaml::as_str).map(str::to_string));
                    cfg.macs.extend(
                        m.get("macaddress")
                            .and_then(Yaml::as_str)
                            .and_then(normalize_mac),
                    );
                }
                // Without a match block the id is the interface name.
                (None, _) => cfg.names.push(id.clone()),
            }
            cfg.v4.dhcp = dev.get("dhcp4").is_some_and(Yaml::is_true);
            cfg.v6.dhcp = dev.get("dhcp6").is_some_and(Yaml::is_true);
            cfg.v6.auto = dev.get("accept-ra").is_some_and(Yaml::is_true);
            for item in dev.get("addresses").map(Yaml::items).unwrap_or_default() {
                // `- 192.0.2.10/24` or, with options, `- 192.0.2.10/24: {lifetime: 0}`.
                let text = match item {
                    Yaml::Str(s) => Some(s.as_str()),
                    Yaml::Map(entries) => entries.first().map(|(k, _)| k.as_str()),
                    Yaml::Seq(_) => None,
                };
                if let Some(text) = text {
                    cfg.add_address(text);
                }
            }
            if !cfg.names.is_empty() || !cfg.macs.is_empty() {
                out.push(cfg);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::testing::ip;

    fn parse_netplan(text: &str) -> Vec<IfaceConfig> {
        super::parse_netplan(text).unwrap()
    }

    const NETPLAN_CLOUD_INIT: &str = "\
# This file is generated from information provided by the datasource.
network:
    ethernets:
        ens3:
            dhcp4: true
            dhcp6: false
            match:
                macaddress: FA:16:3E:00:00:01
            set-name: ens3
        ens4:
            dhcp4: no
            addresses:
            - 192.0.2.10/24
            - \"2001:db8::10/64\"
            routes:
              - to: default
                via: 192.0.2.1
            nameservers:
                addresses: [192.0.2.53, '2001:db8::53']
                search: [example.com]
    version: 2
";

    #[test]
    fn netplan_cloud_init() {
        let cfgs = parse_netplan(NETPLAN_CLOUD_INIT);
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].names, ["ens3"]);
        assert!(
            cfgs[0].macs.is_empty(),
            "set-name wins over the match block"
        );
        assert!(cfgs[0].v4.dhcp && !cfgs[0].v6.dhcp);
        assert_eq!(cfgs[1].names, ["ens4"]);
        assert!(!cfgs[1].v4.dhcp);
        assert_eq!(cfgs[1].v4.addresses, vec![ip("192.0.2.10")]);
        assert_eq!(cfgs[1].v6.addresses, vec![ip("2001:db8::10")]);
    }

    #[test]
    fn netplan_flow_lists_bridges_and_matches() {
        let text = "\
network:
  version: 2
  renderer: NetworkManager   # desktop
  ethernets:
    lan:
      match: {name: \"enp*\"}
      dhcp4: yes
      accept-ra: true
    wan:
      match:
        macaddress: \"52:54:00:aa:bb:cc\"
      addresses: [198.51.100.2/24,
                  \"2001:db8:1::2/64\"]
  bridges:
    br0:
      interfaces: [eno1, eno2]
      addresses:
        - 10.0.0.1/24:
            lifetime: 0
            label: \"br0:0\"
      dhcp6: on
";
        let cfgs = parse_netplan(text);
        assert_eq!(cfgs.len(), 3);
        assert_eq!(cfgs[0].names, ["enp*"]);
        assert!(cfgs[0].v4.dhcp && cfgs[0].v6.auto);
        assert!(cfgs[0].matches("enp1s0", None));
        assert!(cfgs[1].names.is_empty());
        assert_eq!(cfgs[1].macs, ["52:54:00:aa:bb:cc"]);
        assert_eq!(cfgs[1].v4.addresses, vec![ip("198.51.100.2")]);
        assert_eq!(cfgs[1].v6.addresses, vec![ip("2001:db8:1::2")]);
        assert_eq!(cfgs[2].names, ["br0"]);
        assert_eq!(cfgs[2].v4.addresses, vec![ip("10.0.0.1")]);
        assert!(cfgs[2].v6.dhcp);

        assert!(parse_netplan("# nothing here\n").is_empty());
        assert!(parse_netplan("network:\n  version: 2\n").is_empty());
    }

    #[test]
    fn yaml_subset() {
        let doc = parse_yaml("a:\n- x\n- y: 1\n  z: '2 # not a comment'\nb: \"c: d\" # comment\n")
            .unwrap();
        assert_eq!(
            doc,
            Yaml::Map(vec![
                (
                    "a".into(),
                    Yaml::Seq(vec![
                        Yaml::Str("x".into()),
                        Yaml::Map(vec![
                            ("y".into(), Yaml::Str("1".into())),
                            ("z".into(), Yaml::Str("2 # not a comment".into())),
                        ]),
                    ])
                ),
                ("b".into(), Yaml::Str("c: d".into())),
            ])
        );
    }

    // --- YAML the hand-written subset could not read ---

    #[test]
    fn anchors_and_aliases() {
        // One definition shared by two devices, as templating tools write it.
        let text = "\
network:
  version: 2
  ethernets:
    eno1: &dhcp
      dhcp4: true
      dhcp6: true
    eno2: *dhcp
    eno3:
      addresses: &addrs [192.0.2.30/24]
    eno4:
      addresses: *addrs
";
        let cfgs = parse_netplan(text);
        let names: Vec<&str> = cfgs.iter().map(|c| c.names[0].as_str()).collect();
        assert_eq!(names, ["eno1", "eno2", "eno3", "eno4"]);
        assert!(cfgs[1].v4.dhcp && cfgs[1].v6.dhcp);
        assert_eq!(cfgs[3].v4.addresses, vec![ip("192.0.2.30")]);
    }

    #[test]
    fn quoted_keys_flow_mappings_and_block_scalars() {
        let text = "\
\"network\":
  'ethernets':
    \"eth0\": {dhcp4: 'yes', addresses: [\"192.0.2.1/24\", 2001:db8::1/64],
             match: {macaddress: \"52:54:00:AA:BB:CC\"}}
    eth1:
      dhcp4: |
        true
      addresses:
        - \"192.0.2.2/24\"
";
        let cfgs = parse_netplan(text);
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].macs, ["52:54:00:aa:bb:cc"]);
        assert!(cfgs[0].v4.dhcp);
        assert_eq!(cfgs[0].v4.addresses, vec![ip("192.0.2.1")]);
        assert_eq!(cfgs[0].v6.addresses, vec![ip("2001:db8::1")]);
        // A literal block scalar keeps its line end; still the word true.
        assert!(cfgs[1].v4.dhcp);
        assert_eq!(cfgs[1].v4.addresses, vec![ip("192.0.2.2")]);
    }

    #[test]
    fn documents_merge_and_repeated_keys_take_the_last() {
        let text = "\
---
network:
  ethernets:
    eth0: {dhcp4: false}
    eth0: {dhcp4: true}
...
";
        let cfgs = parse_netplan(text);
        assert_eq!(cfgs.len(), 1);
        assert!(cfgs[0].v4.dhcp);
    }

    #[test]
    fn the_retarget_fixtures_read() {
        let fixture = |rel: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/retarget")
                .join(rel);
            parse_netplan(&std::fs::read_to_string(path).unwrap())
        };
        let cfgs = fixture("netplan/root/etc/netplan/01-netcfg.yaml");
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].names, ["lan0"]);
        assert_eq!(cfgs[0].v4.addresses, vec![ip("192.0.2.10")]);
        assert_eq!(cfgs[0].v6.addresses, vec![ip("2001:db8::10")]);
        assert_eq!(cfgs[1].names, ["lan1"]);
        assert!(cfgs[1].v4.dhcp);

        let cfgs = fixture("netplan-block/root/etc/netplan/50-cloud-init.yaml");
        assert_eq!(cfgs.len(), 1);
        assert_eq!(cfgs[0].names, ["lan0"]);
        assert_eq!(cfgs[0].v4.addresses, vec![ip("192.0.2.10")]);
        // `- 2001:db8::10/64:` with options below: a one-key mapping.
        assert_eq!(cfgs[0].v6.addresses, vec![ip("2001:db8::10")]);
    }

    #[test]
    fn not_yaml_is_an_error() {
        assert!(super::parse_netplan("network: [unclosed\n").is_err());
        assert!(super::parse_netplan("network:\n  a: b\n c: d\n").is_err());
    }
}
