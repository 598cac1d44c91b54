//! A domain's ldom_info settings (failure policy, masters, host ID, MAC address, UUID and the
//! keyword options): checked against the registry first, then applied, which cannot fail.

use super::*;

pub(super) fn check_failure_policy(policy: &str) -> Result<(), String> {
    match policy {
        "ignore" | "panic" | "reset" | "stop" => Ok(()),
        other => Err(format!(
            "Invalid failure-policy '{other}': expected ignore, panic, reset or stop"
        )),
    }
}

/// One checked ldom_info setting, ready to apply.
pub(super) enum Setting {
    FailurePolicy(String),
    Master(Vec<String>),
    Hostid(u32),
    Mac(u64),
    /// Given at creation (`uuid=`, or the `<uuid>` list-constraints wrote), kept for life.
    Uuid(String),
    /// extended-mapin-space, perf-counters, rc-add-policy: kept as written.
    Other(String, String),
}

/// A UUID as RFC 4122 writes it (`6c908858-12ef-e520-9eb3-f1cd3dbc3a59`), in lower case.
fn parse_uuid(text: &str) -> Result<String, String> {
    let groups: Vec<&str> = text.split('-').collect();
    let shaped = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if shaped {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "Invalid UUID '{}': expected 8-4-4-4-12 hexadecimal digits",
            text.chars().take(64).collect::<String>()
        ))
    }
}

/// The ldom_info settings of `item`, checked against the registry; `apply_info` applies them
/// and cannot fail.
pub(super) fn check_info(
    reg: &Registry,
    name: &str,
    item: &Item,
    creating: bool,
) -> Result<Vec<Setting>, String> {
    let mut settings = Vec::new();
    for property in &item.properties {
        let value = property.value.trim();
        settings.push(match property.key.as_str() {
            "failure-policy" => {
                check_failure_policy(value)?;
                Setting::FailurePolicy(value.into())
            }
            "master" => {
                let masters: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                if masters.len() > 4 {
                    return Err(format!("LDom {name} can have at most 4 master domains"));
                }
                for master in &masters {
                    if master == name {
                        return Err(format!("LDom {name} cannot be its own master"));
                    }
                    get(reg, master)?;
                }
                Setting::Master(masters)
            }
            key @ ("extended-mapin-space" | "perf-counters" | "rc-add-policy") => {
                check_option_value(key, value)?;
                Setting::Other(key.into(), value.into())
            }
            "hostid" => {
                if !creating && get(reg, name)?.state != DomainState::Inactive {
                    return Err(format!("LDom {name} must be inactive to change its hostid"));
                }
                Setting::Hostid(parse_hostid(value)?)
            }
            other => return Err(format!("Unknown ldom_info property '{other}'")),
        });
    }
    if let Some(uuid) = item.uuid.as_deref().map(str::trim) {
        let uuid = parse_uuid(uuid)?;
        match reg.domains.get(name) {
            // set-domain may carry the UUID the domain has (a listing sent back), no other.
            Some(domain) if !creating && domain.uuid == uuid => {}
            Some(_) if !creating => {
                return Err(format!(
                    "LDom {name}'s UUID is given when it is created and cannot change"
                ));
            }
            _ => {
                if let Some(other) = reg.domains.values().find(|d| d.uuid == uuid) {
                    return Err(format!(
                        "UUID {uuid} is already used by LDom {}",
                        other.name
                    ));
                }
                settings.push(Setting::Uuid(uuid));
            }
        }
    }
    if let Some(address) = &item.address {
        if !creating && get(reg, name)?.state != DomainState::Inactive {
            return Err(format!(
                "LDom {name} must be inactive to change its MAC address"
            ));
        }
        let mac = parse_mac(address.trim())?;
        let own = reg.domains.get(name).is_some_and(|d| d.mac == mac);
        if reg.macs.contains(&mac) && !own {
            return Err(format!("MAC address {} is already in use", format_mac(mac)));
        }
        settings.push(Setting::Mac(mac));
    }
    Ok(settings)
}

/// The other settings are short keywords (`on`, `global,strand`, `iov`): kept as written, but
/// never longer than a name.
fn check_option_value(key: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > NAME_CHARS_MAX {
        return Err(format!(
            "Invalid {key}: at most {NAME_CHARS_MAX} characters are allowed"
        ));
    }
    Ok(())
}

pub(super) fn parse_hostid(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(digits, 16)
        .map_err(|_| format!("Invalid hostid '{text}': expected hexadecimal"))
}

pub(super) fn apply_info(reg: &mut Registry, domain: &mut Domain, settings: Vec<Setting>) {
    for setting in settings {
        match setting {
            Setting::FailurePolicy(policy) => domain.failure_policy = policy,
            Setting::Master(masters) => domain.master = masters,
            Setting::Hostid(hostid) => domain.hostid = hostid,
            Setting::Uuid(uuid) => domain.uuid = uuid,
            Setting::Other(key, value) => {
                domain.options.insert(key, value);
            }
            Setting::Mac(mac) => {
                if mac != domain.mac {
                    reg.macs.remove(&domain.mac);
                    reg.macs.insert(mac);
                    domain.mac = mac;
                }
            }
        }
    }
}
