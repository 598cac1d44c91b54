//! Virtual I/O services and their clients: disk services, volumes and disks, switches and
//! networks.

use super::*;

pub(super) fn service_name<'i>(ctx: &Ctx<'_>, item: &'i Item) -> Result<&'i str, String> {
    let name = required(ctx, item, "service_name")?;
    check_name("service", name, NAME_CHARS_MAX)?;
    Ok(name)
}

pub(super) fn check_new_service(reg: &Registry, service: &str) -> Result<(), String> {
    match reg.services.get(service) {
        Some(owner) => Err(format!(
            "The service name {service} is already in use by {owner}"
        )),
        None => Ok(()),
    }
}

/// The domain that provides `service`, checked to be `content`'s domain.
pub(super) fn own_service(reg: &Registry, name: &str, service: &str) -> Result<(), String> {
    match reg.services.get(service) {
        Some(owner) if owner == name => Ok(()),
        Some(owner) => Err(format!(
            "The service {service} belongs to {owner}, not {name}"
        )),
        None => Err(format!("The service {service} does not exist")),
    }
}

pub(super) fn vds(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let service = service_name(ctx, item(ctx, content, "vds")?)?;
    if ctx.action == Action::AddVdiskserver {
        check_new_service(reg, service)?;
        reg.services.insert(service.into(), name.into());
        get_mut(reg, name)?.vds.push(Vds {
            name: service.into(),
            volumes: Vec::new(),
        });
    } else {
        own_service(reg, name, service)?;
        let vds = get(reg, name)?
            .vds
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| format!("{service} is not a virtual disk service"))?;
        if let Some(volume) = vds.volumes.first() {
            return Err(format!(
                "The service {service} still exports volume {}: remove its volumes first",
                volume.name
            ));
        }
        reg.services.remove(service);
        get_mut(reg, name)?.vds.retain(|s| s.name != service);
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn vds_volume(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "vds_volume")?;
    let service = service_name(ctx, item)?;
    let volume = required(ctx, item, "vol_name")?;
    check_name("volume", volume, NAME_CHARS_MAX)?;
    own_service(reg, name, service)?;
    let vds = get(reg, name)?
        .vds
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| format!("{service} is not a virtual disk service"))?;
    if ctx.action == Action::AddVdiskserverdevice {
        let block_dev = required(ctx, item, "block_dev")?;
        if vds.volumes.iter().any(|v| v.name == volume) {
            return Err(format!("Volume {volume} already exists in {service}"));
        }
        if let Some(other) = vds.volumes.iter().find(|v| v.block_dev == block_dev)
            && !ctx.flag(&["-f", "force"])
        {
            return Err(format!(
                "{block_dev} is already exported by {service} as {}; use force to export it twice",
                other.name
            ));
        }
        let opts: Vec<String> = item
            .property("vol_opts")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
        if let Some(bad) = opts
            .iter()
            .find(|o| !["ro", "slice", "excl"].contains(&o.as_str()))
        {
            return Err(format!(
                "Invalid volume option '{bad}': expected ro, slice or excl"
            ));
        }
        let volume = Volume {
            name: volume.into(),
            block_dev: block_dev.into(),
            opts,
            mpgroup: item.property("mpgroup").map(String::from),
        };
        get_mut(reg, name)?
            .vds
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or_else(|| format!("{service} is not a virtual disk service"))?
            .volumes
            .push(volume);
    } else {
        if !vds.volumes.iter().any(|v| v.name == volume) {
            return Err(format!("Volume {volume} does not exist in {service}"));
        }
        for other in reg.domains.values() {
            if let Some(disk) = other
                .vdisks
                .iter()
                .find(|d| d.service == service && d.volume == volume)
            {
                return Err(format!(
                    "Volume {volume}@{service} is in use by vdisk {} of {}",
                    disk.name, other.name
                ));
            }
        }
        get_mut(reg, name)?
            .vds
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or_else(|| format!("{service} is not a virtual disk service"))?
            .volumes
            .retain(|v| v.name != volume);
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn vdisk(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "disk")?;
    let disk = required(ctx, item, "vdisk_name")?;
    check_name("vdisk", disk, NAME_CHARS_MAX)?;
    if ctx.action == Action::AddVdisk {
        if domain.vdisks.iter().any(|d| d.name == disk) {
            return Err(format!("Vdisk {disk} already exists in {name}"));
        }
        let service = required(ctx, item, "service_name")?;
        let volume = required(ctx, item, "vol_name")?;
        let owner = reg
            .services
            .get(service)
            .ok_or_else(|| format!("The service {service} does not exist"))?;
        let exists = get(reg, owner)?
            .vds
            .iter()
            .any(|s| s.name == service && s.volumes.iter().any(|v| v.name == volume));
        if !exists {
            return Err(format!("Volume {volume}@{service} does not exist"));
        }
        let timeout = item
            .property("timeout")
            .map(|t| parse_number("timeout", t))
            .transpose()?;
        let domain = get_mut(reg, name)?;
        let id = lowest_free_device_id(domain.vdisks.iter().map(|d| d.id));
        domain.vdisks.push(VDisk {
            name: disk.into(),
            service: service.into(),
            volume: volume.into(),
            timeout,
            id,
        });
    } else {
        if !domain.vdisks.iter().any(|d| d.name == disk) {
            return Err(format!("Vdisk {disk} does not exist in {name}"));
        }
        get_mut(reg, name)?.vdisks.retain(|d| d.name != disk);
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn vlan_ids(text: Option<&str>) -> Result<Vec<u16>, String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| match v.parse::<u16>() {
            Ok(id) if (1..=4094).contains(&id) => Ok(id),
            _ => Err(format!("Invalid VLAN id '{v}': expected 1 to 4094")),
        })
        .collect()
}

pub(super) fn pvid(item: &Item) -> Result<Option<u16>, String> {
    item.property("pvid")
        .or(item.property("default-vlan-id"))
        .map(|p| {
            vlan_ids(Some(p)).and_then(|ids| match ids[..] {
                [id] => Ok(id),
                _ => Err(format!("Invalid pvid '{p}'")),
            })
        })
        .transpose()
}

/// A MAC address asked for in `item`, checked to be free, or a fresh one.
pub(super) fn mac_for(
    reg: &mut Registry,
    item: &Item,
    current: Option<u64>,
) -> Result<u64, String> {
    match item
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "auto")
    {
        Some(text) => {
            let mac = parse_mac(text)?;
            if Some(mac) != current && reg.macs.contains(&mac) {
                return Err(format!("MAC address {} is already in use", format_mac(mac)));
            }
            if let Some(old) = current {
                reg.macs.remove(&old);
            }
            reg.macs.insert(mac);
            Ok(mac)
        }
        None => match current {
            Some(mac) => Ok(mac),
            None => reg
                .allocate_mac()
                .ok_or_else(|| "No automatic MAC address is left".into()),
        },
    }
}

pub(super) fn vswitch(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "vsw")?;
    let service = service_name(ctx, item)?;
    let mtu = item
        .property("mtu")
        .map(|m| parse_number::<u32>("mtu", m))
        .transpose()?;
    if let Some(mtu) = mtu
        && !(1500..=16000).contains(&mtu)
    {
        return Err(format!("Invalid mtu {mtu}: expected 1500 to 16000"));
    }
    let pvid = pvid(item)?;
    let vid = item
        .property("vid")
        .map(|v| vlan_ids(Some(v)))
        .transpose()?;
    let inter_vnet_link = match item
        .property("inter_vnet_link")
        .or(item.property("inter-vnet-link"))
    {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(other) => {
            return Err(format!(
                "Invalid inter_vnet_link '{other}': expected on or off"
            ));
        }
    };
    match ctx.action {
        Action::AddVswitch => {
            check_new_service(reg, service)?;
            let mac = mac_for(reg, item, None)?;
            reg.services.insert(service.into(), name.into());
            let domain = get_mut(reg, name)?;
            let id = lowest_free_device_id(domain.vsw.iter().map(|v| v.id));
            domain.vsw.push(Vsw {
                name: service.into(),
                mac,
                net_dev: item
                    .property("dev_path")
                    .or(item.property("net-dev"))
                    .map(String::from),
                pvid: pvid.unwrap_or(1),
                vid: vid.unwrap_or_default(),
                mtu: mtu.unwrap_or(1500),
                mode: item.property("mode").map(String::from),
                linkprop: item.property("linkprop").map(String::from),
                inter_vnet_link: inter_vnet_link.unwrap_or(true),
                id,
            });
        }
        Action::SetVswitch => {
            own_service(reg, name, service)?;
            let current = get(reg, name)?
                .vsw
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?
                .mac;
            let mac = mac_for(reg, item, Some(current))?;
            let vsw = get_mut(reg, name)?
                .vsw
                .iter_mut()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?;
            vsw.mac = mac;
            if let Some(dev) = item.property("dev_path").or(item.property("net-dev")) {
                vsw.net_dev = Some(dev.into());
            }
            vsw.pvid = pvid.unwrap_or(vsw.pvid);
            vsw.vid = vid.unwrap_or_else(|| vsw.vid.clone());
            vsw.mtu = mtu.unwrap_or(vsw.mtu);
            vsw.inter_vnet_link = inter_vnet_link.unwrap_or(vsw.inter_vnet_link);
            if let Some(mode) = item.property("mode") {
                vsw.mode = Some(mode.into()).filter(|m: &String| !m.is_empty());
            }
            if let Some(linkprop) = item.property("linkprop") {
                vsw.linkprop = Some(linkprop.into()).filter(|m: &String| !m.is_empty());
            }
        }
        _ => {
            own_service(reg, name, service)?;
            get(reg, name)?
                .vsw
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?;
            for other in reg.domains.values() {
                if let Some(net) = other.vnets.iter().find(|n| n.service == service) {
                    return Err(format!(
                        "The virtual switch {service} still serves vnet {} of {}",
                        net.name, other.name
                    ));
                }
            }
            let domain = get_mut(reg, name)?;
            let mac = domain
                .vsw
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?
                .mac;
            domain.vsw.retain(|s| s.name != service);
            reg.macs.remove(&mac);
            reg.services.remove(service);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn vnet(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "network")?;
    let net = required(ctx, item, "vnet_name")?;
    check_name("vnet", net, NAME_CHARS_MAX)?;
    let existing = domain.vnets.iter().find(|n| n.name == net).cloned();
    let pvid = pvid(item)?;
    let vid = item
        .property("vid")
        .map(|v| vlan_ids(Some(v)))
        .transpose()?;
    match (ctx.action, existing) {
        (Action::AddVnet, Some(_)) => return Err(format!("Vnet {net} already exists in {name}")),
        (Action::AddVnet, None) => {
            let service = required(ctx, item, "service_name")?;
            let is_vsw = reg
                .services
                .get(service)
                .and_then(|o| reg.domains.get(o))
                .is_some_and(|d| d.vsw.iter().any(|s| s.name == service));
            if !is_vsw {
                return Err(format!("The virtual switch {service} does not exist"));
            }
            let mac = mac_for(reg, item, None)?;
            let domain = get_mut(reg, name)?;
            let id = lowest_free_device_id(domain.vnets.iter().map(|n| n.id));
            domain.vnets.push(VNet {
                name: net.into(),
                service: service.into(),
                mac,
                pvid: pvid.unwrap_or(1),
                vid: vid.unwrap_or_default(),
                mode: item.property("mode").map(String::from),
                linkprop: item.property("linkprop").map(String::from),
                id,
            });
        }
        (_, None) => return Err(format!("Vnet {net} does not exist in {name}")),
        (Action::SetVnet, Some(old)) => {
            if let Some(service) = item.property("service_name")
                && service != old.service
            {
                return Err(format!(
                    "Vnet {net} cannot move from {} to {service}: remove it and add it again",
                    old.service
                ));
            }
            let mac = mac_for(reg, item, Some(old.mac))?;
            let vnet = get_mut(reg, name)?
                .vnets
                .iter_mut()
                .find(|n| n.name == net)
                .ok_or_else(|| format!("Vnet {net} does not exist in {name}"))?;
            vnet.mac = mac;
            vnet.pvid = pvid.unwrap_or(vnet.pvid);
            vnet.vid = vid.unwrap_or_else(|| vnet.vid.clone());
            if let Some(mode) = item.property("mode") {
                vnet.mode = Some(mode.into()).filter(|m: &String| !m.is_empty());
            }
            if let Some(linkprop) = item.property("linkprop") {
                vnet.linkprop = Some(linkprop.into()).filter(|m: &String| !m.is_empty());
            }
        }
        (_, Some(old)) => {
            reg.macs.remove(&old.mac);
            get_mut(reg, name)?.vnets.retain(|n| n.name != net);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

/// The lowest device number of a class (`disk@N`, `network@N`) that no device of the class in
/// the domain holds, as Oracle numbers them: each class from 0, a freed number used again.
pub(crate) fn lowest_free_device_id(taken: impl Iterator<Item = u32>) -> u32 {
    let taken: std::collections::BTreeSet<u32> = taken.collect();
    // A domain has far fewer devices than u32 numbers (its constraints fit in a stanza).
    (0..=u32::MAX)
        .find(|n| !taken.contains(n))
        .unwrap_or(u32::MAX)
}
