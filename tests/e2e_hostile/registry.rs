//! Documents that ask too much of the registry: an operator's typo and amplifying requests.

use super::*;

#[test]
fn an_operator_typo_is_answered_and_the_control_plane_goes_on() {
    // `ldm rm-vds primary-vsw0` panicked the registry thread: the process stayed up, the first
    // request hung for its timeout and every later document got internal-server-error.
    let daemon = Daemon::start(REMOTE);
    let mut client = local(&daemon);
    let vds = "<LDM_interface version='1.3'><cmd><action>remove-vdiskserver</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='primary'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>vds</rasd:OtherResourceType><gprop:GenericProperty key='service_name'>primary-vsw0</gprop:GenericProperty></Item></Section></Content></Envelope></data></cmd></LDM_interface>";
    let (status, message) = document_status(&client.request(vds));
    assert_eq!(status, "failure");
    assert_eq!(
        message.as_deref(),
        Some("primary-vsw0 is not a virtual disk service")
    );
    let mau = "<LDM_interface version='1.3'><cmd><action>add-mau</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='primary'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>mau</rasd:OtherResourceType><rasd:AllocationUnits>4294967295</rasd:AllocationUnits></Item></Section></Content></Envelope></data></cmd></LDM_interface>";
    let (status, message) = document_status(&client.request(mau));
    assert_eq!(status, "failure");
    assert!(
        message
            .unwrap()
            .starts_with("The machine has 32 crypto units")
    );
    assert_eq!(
        document_status(&client.request(&add_domain("ldg1"))).0,
        "success"
    );
    bystander_is_answered(&daemon);
}

#[test]
fn amplifying_documents_are_bounded_and_a_bystander_is_answered() {
    // A read user's 256 KiB document of ~12,000 list-devices objects used to make hundreds of
    // MB of reply; 16 pipelined ones exhausted memory while the registry stalled everyone.
    // Smaller reply limits than the defaults keep the test quick; the mechanism is the same.
    const REPLY_MAX: usize = 1 << 20;
    let daemon = Daemon::start_with_users(
        &format!(
            "{REMOTE}\n[limits]\nreply_bytes_max = {REPLY_MAX}\nreply_bytes_in_flight_max = {}",
            4 * REPLY_MAX
        ),
        &[("reader", "read", "pw")],
    );
    let before = rss_bytes(&daemon);
    let huge = format!(
        "<LDM_interface version='1.0'><cmd><action>list-devices</action>{}</cmd></LDM_interface>",
        "<data version='3.0'/>".repeat(12_000)
    );
    assert!(huge.len() < 256 * 1024);
    let mut reader = logged_in(&daemon, "reader", "pw");
    let reply = reader.request(&huge);
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure");
    assert!(
        message
            .unwrap()
            .contains("12000 data elements; limits.data_per_document_max allows 1024")
    );
    // At the limit: 1024 objects of about 40 KiB each, 16 documents pipelined per reader.
    let most = format!(
        "<LDM_interface version='1.0'><cmd><action>list-devices</action>{}</cmd></LDM_interface>",
        "<data version='3.0'/>".repeat(1024)
    );
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (addr, state, most) = (daemon.xmpp.unwrap(), daemon.state_dir(), most.clone());
        readers.push(std::thread::spawn(move || {
            let mut client = Client::tcp(addr, &state);
            client.secure();
            client.login("reader", "pw");
            for _ in 0..16 {
                client.send(&most);
            }
            let mut replies = Vec::new();
            for _ in 0..16 {
                replies.push(client.read_until("</LDM_interface>"));
            }
            replies
        }));
    }
    // The readers' unread replies fill the room all replies share; the bystander's listing
    // comes from its connection's own share, so it is answered every time.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        bystander_is_answered(&daemon);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut limited = 0;
    for reader in readers {
        for reply in reader.join().unwrap() {
            assert!(reply.len() <= REPLY_MAX, "a reply of {} bytes", reply.len());
            if reply.contains("limits.reply_bytes_max")
                || reply.contains("reply_bytes_in_flight_max")
            {
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "no listing reached a limit");
    let grown = rss_bytes(&daemon).saturating_sub(before);
    // Ceiling, not a target: the replies in flight are held to 4 MiB here, plus at most a
    // stanza's worth (256 KiB) per connection.
    assert!(grown < 64 << 20, "resident memory grew by {grown} bytes");
}
