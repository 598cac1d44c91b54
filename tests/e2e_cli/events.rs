//! `ldm events`: events fed by other `ldm` runs, and a stream that ends first.

use super::*;

#[test]
fn events_are_printed_as_other_ldm_invocations_cause_them() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for (format, expected) in [
        (
            "text",
            vec![
                "add-domain ev1".to_owned(),
                "add-vcpu ev1 cpu=2".to_owned(),
                "remove-domain ev1".to_owned(),
            ],
        ),
        ("json", Vec::new()),
    ] {
        let mut child = ldm_command(&["--socket", &socket, "events", "--count", "3", "-o", format])
            .spawn()
            .unwrap();
        // The subscription is in place once ldm says it listens.
        let (line, _rest) = first_stderr_line(&mut child);
        assert_eq!(line, "ldm: listening for all events (Ctrl-C to stop)\n");
        let name = format!("ev-{format}");
        ok(ldm(&daemon, &["add-domain", &name]));
        ok(ldm(&daemon, &["add-vcpu", "2", &name]));
        ok(ldm(&daemon, &["remove-domain", &name]));
        let out = finish(child, None);
        exits(&out, 0);
        let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        if format == "text" {
            let expected: Vec<String> = expected.iter().map(|l| l.replace("ev1", &name)).collect();
            assert_eq!(lines, expected);
        } else {
            let events: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(events.len(), 3);
            assert_eq!(events[0]["event"], "add-domain");
            assert_eq!(events[1]["event"], "add-vcpu");
            assert_eq!(events[1]["domains"], serde_json::json!([name]));
            assert_eq!(events[1]["resources"][0]["units"], "2");
            assert_eq!(events[2]["event"], "remove-domain");
        }
    }
}

#[test]
fn events_fail_with_exit_5_when_the_stream_ends_first() {
    // A daemon that shuts down after one of three events (its stream error says why), one
    // that dies after one of three, and one that dies under an `ldm events` with no count.
    for (count, ending) in [
        (Some("3"), "shutdown"),
        (Some("3"), "crash"),
        (None, "crash"),
    ] {
        let daemon = Daemon::start("");
        let socket = daemon.socket.to_str().unwrap().to_owned();
        let mut args = vec!["--socket", socket.as_str(), "events"];
        if let Some(count) = count {
            args.extend(["--count", count]);
        }
        let mut child = ldm_command(&args).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, printed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let (line, rest) = first_stderr_line(&mut child);
        assert_eq!(line, "ldm: listening for all events (Ctrl-C to stop)\n");
        if count.is_some() {
            ok(ldm(&daemon, &["add-domain", "once"]));
            // The event is printed before the daemon goes.
            assert_eq!(printed.recv_timeout(RUN_LIMIT).unwrap(), "add-domain once");
        }
        let expected = match ending {
            "shutdown" => {
                daemon.terminate();
                // A stream error says why.
                format!("ldm: ldmd at {socket}: the daemon ended the stream: system-shutdown\n")
            }
            _ => {
                daemon.crash();
                let of = match count {
                    Some(count) => format!("1 of {count}"),
                    None => "0".to_owned(),
                };
                format!("ldm: ldmd at {socket}: the stream ended after {of} events\n")
            }
        };
        let out = finish(child, None);
        exits(&out, 5);
        assert_eq!(rest.join().unwrap(), expected, "{ending}");
    }
}
