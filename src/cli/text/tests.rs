use super::*;
use crate::ldm::reply::Reply;

/// A list-domain reply as ldmd writes it: a guest, then the control domain.
const LISTING: &str = "<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'><Envelope><References/>\
    <Content id='ldg1'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><uuid>u-1</uuid><rasd:Address>00:14:4f:f8:00:02</rasd:Address>\
    <gprop:GenericProperty key='state'>active</gprop:GenericProperty><gprop:GenericProperty key='flags'>-n----</gprop:GenericProperty>\
    <gprop:GenericProperty key='cons'>5000</gprop:GenericProperty><gprop:GenericProperty key='ncpu'>8</gprop:GenericProperty>\
    <gprop:GenericProperty key='mem'>4294967296</gprop:GenericProperty><gprop:GenericProperty key='util'>0.0</gprop:GenericProperty><gprop:GenericProperty key='norm_util'>0.0</gprop:GenericProperty><gprop:GenericProperty key='uptime'>3720</gprop:GenericProperty><gprop:GenericProperty key='softstate'>OpenBoot Running</gprop:GenericProperty>\
    <gprop:GenericProperty key='hostid'>0x84f80002</gprop:GenericProperty><gprop:GenericProperty key='failure-policy'>ignore</gprop:GenericProperty></Item></Section></Content>\
    <Content id='primary'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType>\
    <gprop:GenericProperty key='state'>active</gprop:GenericProperty><gprop:GenericProperty key='flags'>-n-cv-</gprop:GenericProperty>\
    <gprop:GenericProperty key='cons'>UART</gprop:GenericProperty><gprop:GenericProperty key='ncpu'>16</gprop:GenericProperty>\
    <gprop:GenericProperty key='mem'>17179869184</gprop:GenericProperty><gprop:GenericProperty key='util'>23</gprop:GenericProperty><gprop:GenericProperty key='norm_util'>23</gprop:GenericProperty><gprop:GenericProperty key='uptime'>90061</gprop:GenericProperty><gprop:GenericProperty key='softstate'>Linux running</gprop:GenericProperty></Item></Section></Content>\
    <Content id='ldg2'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType>\
    <gprop:GenericProperty key='state'>inactive</gprop:GenericProperty><gprop:GenericProperty key='flags'>------</gprop:GenericProperty>\
    <gprop:GenericProperty key='cons'></gprop:GenericProperty><gprop:GenericProperty key='ncpu'>2</gprop:GenericProperty>\
    <gprop:GenericProperty key='mem'>1610612736</gprop:GenericProperty><gprop:GenericProperty key='uptime'></gprop:GenericProperty></Item></Section></Content>\
    </Envelope><response><status>success</status></response></data><response><status>success</status></response></cmd><response><status>success</status></response></LDM_interface>";

fn rows() -> Vec<DomainRow> {
    domain_rows(&Reply::from_xml(LISTING).unwrap())
}

#[test]
fn the_table_has_the_ldm_columns_control_domain_first() {
    assert_eq!(
        list_table(&rows()),
        "NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  NORM  UPTIME\n\
         primary          active     -n-cv-  UART    16    16G       23%   23%  1d 1h 1m\n\
         ldg1             active     -n----  5000    8     4G       0.0%  0.0%  1h 2m\n\
         ldg2             inactive   ------          2     1536M\n"
    );
}

#[test]
fn the_parseable_form_gives_flag_letters_bytes_and_seconds_and_spells_flags_when_long() {
    // Oracle's rule (Flag Definitions): letters in `ldm list -p`, words with `-l -p`.
    assert_eq!(
        list_parseable(&rows()),
        "VERSION 1.6\n\
         DOMAIN|name=primary|state=active|flags=-n-cv-|cons=UART|ncpu=16|mem=17179869184|util=23|uptime=90061|norm_util=23\n\
         DOMAIN|name=ldg1|state=active|flags=-n----|cons=5000|ncpu=8|mem=4294967296|util=0.0|uptime=3720|norm_util=0.0\n\
         DOMAIN|name=ldg2|state=inactive|flags=------|cons=|ncpu=2|mem=1610612736|util=|uptime=|norm_util=\n"
    );
    let long: Vec<String> = rows().iter().map(|r| parseable_row(r, true)).collect();
    assert_eq!(
        long,
        [
            "DOMAIN|name=primary|state=active|flags=normal,control,vio-service|cons=UART|ncpu=16|mem=17179869184|util=23|uptime=90061|softstate=Linux running|norm_util=23",
            "DOMAIN|name=ldg1|state=active|flags=normal|cons=5000|ncpu=8|mem=4294967296|util=0.0|uptime=3720|softstate=OpenBoot Running|norm_util=0.0",
            "DOMAIN|name=ldg2|state=inactive|flags=|cons=|ncpu=2|mem=1610612736|util=|uptime=|softstate=|norm_util=",
        ]
    );
    assert_eq!(
        flag_words("snrcvs"),
        "starting-or-stopping,normal,memory-dr,control,vio-service,source"
    );
    assert_eq!(flag_words("-td--e"), "transition,delayed-reconf,error");
}

#[test]
fn control_characters_cannot_reach_the_terminal() {
    assert_eq!(terminal_safe("a\tb\nc"), "a\tb\nc");
    assert_eq!(
        terminal_safe("x\u{1b}[2Jy\rz\u{9b}1m"),
        "x\\u{1b}[2Jy\\u{d}z\\u{9b}1m"
    );
    assert!(matches!(
        terminal_safe("plain"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn uptime_reads_like_the_ldm_cli() {
    assert_eq!(format_uptime(0), "0s");
    assert_eq!(format_uptime(59), "59s");
    assert_eq!(format_uptime(60), "1m");
    assert_eq!(format_uptime(3600), "1h");
    assert_eq!(format_uptime(3720), "1h 2m");
    assert_eq!(format_uptime(86_400 + 7260), "1d 2h 1m");
    // Oracle's `19d 9m`: a zero unit is left out.
    assert_eq!(format_uptime(19 * 86_400 + 540), "19d 9m");
}

#[test]
fn blocks_render_as_titled_text_and_as_their_records() {
    use crate::cli::view::{col, record, table};
    let blocks = vec![
        Block {
            title: "UUID",
            group: "domain",
            human: vec!["    u-1".into()],
            parseable: vec![record("UUID", &[("uuid", "u-1")])],
        },
        Block {
            title: "MEMORY",
            group: "memory",
            human: table(
                &[col("RA", 16), col("SIZE", 0)],
                &[vec!["0x10000000".into(), "4G".into()]],
            ),
            parseable: vec!["MEMORY".into(), record("", &[("ra", "0x10000000")])],
        },
    ];
    assert_eq!(
        blocks_text(&blocks),
        "UUID\n    u-1\n\nMEMORY\n    RA               SIZE\n    0x10000000       4G\n\n"
    );
    assert_eq!(
        blocks_parseable(&blocks),
        "UUID|uuid=u-1\nMEMORY\n|ra=0x10000000\n"
    );
    assert!(blocks[1].shown(&["memory".into()]) && !blocks[0].shown(&["memory".into()]));
    // One record stays one line with its fields, whatever a value holds.
    assert_eq!(
        record("VARIABLES", &[("x", "a\nb|c\rd")]),
        "VARIABLES|x=a\\nb\\|c\\rd"
    );
    assert!(blocks[0].shown(&[]));
}

#[test]
fn an_event_line_names_the_action_the_domain_and_the_resources() {
    let event = EventDoc::from_xml("<LDM_event version='1.1'><cmd><action>add-vnet</action><data version='3.0'><Envelope><References/><Content id='ldg1'><Section><Item><rasd:OtherResourceType>network</rasd:OtherResourceType><gprop:GenericProperty key='vnet_name'>vnet1</gprop:GenericProperty></Item><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>8</rasd:AllocationUnits></Item></Section></Content></Envelope></data></cmd></LDM_event>").unwrap();
    assert_eq!(
        event_line(&event),
        "add-vnet ldg1 network(vnet_name=vnet1) cpu=8"
    );
}

#[test]
fn a_failed_listing_renders_what_succeeded_and_never_panics() {
    let reply = Reply::from_xml("<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'><Envelope><Content id='x'/></Envelope><response><status>failure</status><resp_msg>LDom x does not exist</resp_msg></response></data></cmd><response><status>failure</status></response></LDM_interface>").unwrap();
    assert_eq!(
        list_table(&domain_rows(&reply)),
        format!("{TABLE_HEADER}\n")
    );
    assert_eq!(long_listing(&reply, &[], false), "");
    assert_eq!(reply.failures(), ["LDom x does not exist"]);
    // A Content without any ldom_info still gets a row: its name, every field blank.
    let bare = Reply::from_xml("<LDM_interface><cmd><action>list-domain</action><data><Envelope><Content id='y'/></Envelope><response><status>success</status></response></data></cmd></LDM_interface>").unwrap();
    assert_eq!(table_row(&domain_rows(&bare)[0]), "y");
}
