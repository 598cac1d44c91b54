//! The services a domain provides (VCC, VSW, VDS), for the long form and list-services.

use super::{Block, Column, col, device, of_type, port_range, prop, record, table};
use crate::ldm::document::Item;

/// The VCC, VSW and VDS blocks of the services among `items`; with `owner`, an LDOM column
/// and `ldom=` name the domain that provides them (list-services).
pub fn service_blocks(items: &[&Item], owner: Option<&str>) -> Vec<Block> {
    let with_owner = |columns: &[Column]| {
        let mut columns = columns.to_vec();
        if owner.is_some() {
            columns.insert(1, col("LDOM", 16));
        }
        columns
    };
    let owned = |mut row: Vec<String>| {
        if let Some(owner) = owner {
            row.insert(1, owner.to_owned());
        }
        row
    };
    let ldom: Vec<(&str, &str)> = owner.map(|o| ("ldom", o)).into_iter().collect();
    let mut blocks = Vec::new();
    let vcc: Vec<&Item> = of_type(items, "vcc").collect();
    if !vcc.is_empty() {
        let rows: Vec<Vec<String>> = vcc
            .iter()
            .map(|v| owned(vec![prop(v, "service_name"), port_range(v)]))
            .collect();
        blocks.push(Block {
            title: "VCC",
            group: "console",
            human: table(&with_owner(&[col("NAME", 16), col("PORT-RANGE", 0)]), &rows),
            parseable: vcc
                .iter()
                .map(|v| {
                    let (name, nclients) = (prop(v, "service_name"), prop(v, "nclients"));
                    let range = port_range(v);
                    let mut fields = vec![("name", name.as_str())];
                    fields.extend(ldom.iter().copied());
                    // Constraints carry no client count: only bindings have clients.
                    if !nclients.is_empty() {
                        fields.push(("nclients", &nclients));
                    }
                    fields.push(("port-range", &range));
                    record("VCC", &fields)
                })
                .collect(),
        });
    }
    let vsw: Vec<&Item> = of_type(items, "vsw").collect();
    if !vsw.is_empty() {
        let mut rows = Vec::new();
        let mut parseable = Vec::new();
        for v in &vsw {
            let f = |key: &str| prop(v, key);
            let mac = v.address.clone().unwrap_or_default();
            let [
                name,
                nclients,
                net_dev,
                id,
                default_vlan,
                pvid,
                vid,
                mtu,
                mode,
                linkprop,
                ivl,
            ] = [
                "service_name",
                "nclients",
                "dev_path",
                "id",
                "default-vlan-id",
                "pvid",
                "vid",
                "mtu",
                "mode",
                "linkprop",
                "inter_vnet_link",
            ]
            .map(f);
            let dev = device("switch", &id);
            rows.push(owned(vec![
                name.clone(),
                mac.clone(),
                net_dev.clone(),
                id.clone(),
                dev.clone(),
                linkprop.clone(),
                default_vlan.clone(),
                pvid.clone(),
                vid.clone(),
                mtu.clone(),
                mode.clone(),
                ivl.clone(),
            ]));
            let mut fields = vec![("name", name.as_str())];
            fields.extend(ldom.iter().copied());
            if !nclients.is_empty() {
                fields.push(("nclients", &nclients));
            }
            fields.extend([
                ("mac-addr", mac.as_str()),
                ("net-dev", &net_dev),
                ("dev", &dev),
                ("default-vlan-id", &default_vlan),
                ("pvid", &pvid),
                ("vid", &vid),
                ("mtu", &mtu),
                ("mode", &mode),
                ("linkprop", &linkprop),
                ("inter-vnet-link", &ivl),
                ("id", &id),
            ]);
            parseable.push(record("VSW", &fields));
        }
        blocks.push(Block {
            title: "VSW",
            group: "network",
            human: table(&with_owner(VSW_COLUMNS), &rows),
            parseable,
        });
    }
    let mut rows = Vec::new();
    let mut parseable = Vec::new();
    for server in of_type(items, "vds") {
        let (name, nclients) = (prop(server, "service_name"), prop(server, "nclients"));
        let mut fields = vec![("name", name.as_str())];
        fields.extend(ldom.iter().copied());
        if !nclients.is_empty() {
            fields.push(("nclients", &nclients));
        }
        parseable.push(record("VDS", &fields));
        let volumes: Vec<&Item> = of_type(items, "vds_volume")
            .filter(|v| prop(v, "service_name") == name)
            .collect();
        if volumes.is_empty() {
            rows.push(owned(vec![name.clone()]));
        }
        for (n, volume) in volumes.iter().enumerate() {
            let shown = if n == 0 { name.clone() } else { String::new() };
            let f = |key: &str| prop(volume, key);
            let mut row = owned(vec![shown]);
            if n > 0 && owner.is_some() {
                row[1] = String::new();
            }
            row.extend([f("vol_name"), f("vol_opts"), f("mpgroup"), f("block_dev")]);
            rows.push(row);
            parseable.push(record(
                "",
                &[
                    ("vol", &f("vol_name")),
                    ("opts", &f("vol_opts")),
                    ("dev", &f("block_dev")),
                    ("mpgroup", &f("mpgroup")),
                ],
            ));
        }
    }
    if !parseable.is_empty() {
        blocks.push(Block {
            title: "VDS",
            group: "disk",
            human: table(
                &with_owner(&[
                    col("NAME", 16),
                    col("VOLUME", 14),
                    col("OPTIONS", 16),
                    col("MPGROUP", 14),
                    col("DEVICE", 0),
                ]),
                &rows,
            ),
            parseable,
        });
    }
    blocks
}

const VSW_COLUMNS: &[Column] = &[
    col("NAME", 16),
    col("MAC", 17),
    col("NET-DEV", 9),
    col("ID", 4),
    col("DEVICE", 10),
    col("LINKPROP", 10),
    col("DEFAULT-VLAN-ID", 15),
    col("PVID", 4),
    col("VID", 20),
    col("MTU", 5),
    col("MODE", 6),
    col("INTER-VNET-LINK", 0),
];
