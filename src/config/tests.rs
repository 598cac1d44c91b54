use super::*;

#[test]
fn defaults_are_loopback_only_with_the_standard_port() {
    let config = Config::from_toml("", &Overrides::default()).unwrap();
    assert_eq!(config.listen, ["127.0.0.1:6482".parse().unwrap()]);
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9482".parse().unwrap())
    );
    assert_eq!(config.state_dir, PathBuf::from("./ldmd-state"));
    assert_eq!(config.socket, PathBuf::from("./ldmd-state/ldmd.sock"));
    assert!(config.domains.contains(&"localhost".to_owned()));
    assert!(config.xmpp_enabled);
    assert!(!config.tls.allow_tls13);
    assert_eq!(config.limits, Limits::default());
}

#[test]
fn flags_override_the_file() {
    let overrides = Overrides {
        listen: vec!["[::1]:7000".into()],
        socket: Some("/tmp/x.sock".into()),
        state_dir: Some("/var/lib/ldmd".into()),
        metrics_listen: Some("off".into()),
        runtime: Some(RuntimeChoice::Epoll),
    };
    let text = "listen = ['0.0.0.0:6482']\nstate_dir = '/a'\nruntime = 'io_uring'";
    let config = Config::from_toml(text, &overrides).unwrap();
    assert_eq!(config.runtime, RuntimeChoice::Epoll);
    assert_eq!(config.listen, ["[::1]:7000".parse().unwrap()]);
    assert_eq!(config.socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/ldmd"));
    assert_eq!(config.metrics_listen, None);
}

#[test]
fn runtime_defaults_to_auto_and_a_wrong_one_is_refused() {
    let config = Config::from_toml("", &Overrides::default()).unwrap();
    assert_eq!(config.runtime, RuntimeChoice::Auto);
    let config = Config::from_toml("runtime = 'io_uring'", &Overrides::default()).unwrap();
    assert_eq!(config.runtime, RuntimeChoice::IoUring);
    let err = Config::from_toml("runtime = 'uring'", &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("auto"), "{err}");
}

#[test]
fn xmpp_disabled_means_no_tcp_listener() {
    let config = Config::from_toml("xmpp_enabled = false", &Overrides::default()).unwrap();
    assert!(config.listen.is_empty());
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let err = Config::from_toml("lisen = []", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
    let err = Config::from_toml("[limits]\nsasl_attempts_max = 9", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.sasl_attempts_max"), "{err}");
    let err = Config::from_toml("listen = ['nowhere']", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    let err = Config::from_toml("[tls]\ncert_file = 'a.pem'", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_file"), "{err}");
    let err = Config::from_toml("[local_users]\nbob = 'read'", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid"), "{err}");
}

#[test]
fn local_roles() {
    let config = Config::from_toml(
        "[local_users]\n1000 = 'read'\n1001 = 'write'",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.local_role(0), Role::Write);
    assert_eq!(config.local_role(1000), Role::Read);
    assert_eq!(config.local_role(1001), Role::Write);
    assert_eq!(config.local_role(4242), Role::None);
}

#[test]
fn the_daemons_own_uid_writes_unless_mapped_otherwise() {
    let mut config = Config::from_toml(
        "[local_users]
1001 = 'read'",
        &Overrides::default(),
    )
    .unwrap();
    config.owner_uid = 1000;
    assert_eq!(config.local_role(1000), Role::Write, "the owner");
    assert_eq!(config.local_role(1002), Role::None, "anyone else");
    config.owner_uid = 1001;
    assert_eq!(config.local_role(1001), Role::Read, "a mapping wins");
}

#[test]
fn idle_timeout_zero_disables_it() {
    let config =
        Config::from_toml("[limits]\nidle_timeout_secs = 0", &Overrides::default()).unwrap();
    assert_eq!(config.limits.idle_timeout(), None);
}

#[test]
fn event_queue_max_is_positive() {
    // A subscriber that may queue nothing could never receive an event.
    let config = Config::from_toml("[limits]\nevent_queue_max = 8", &Overrides::default()).unwrap();
    assert_eq!(config.limits.event_queue_max, 8);
    let err = Config::from_toml("[limits]\nevent_queue_max = 0", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.event_queue_max"), "{err}");
}

/// The field names serde's derive knows for the struct `T`: it hands them to
/// `deserialize_struct`, where this deserializer records them and stops.
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.expect("a struct")
}

#[test]
fn the_shipped_system_config_loads_and_names_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ldmd.toml");
    let config = Config::load(Some(&path), &Overrides::default()).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/ldmd"));
    assert_eq!(config.socket, PathBuf::from(SYSTEM_SOCKET));
    assert_eq!(config.listen, [DEFAULT_LISTEN.parse().unwrap()]);

    let text = std::fs::read_to_string(&path).unwrap();
    // `key = value`, commented out (a default) or not.
    let named = |key: &str| {
        text.lines().any(|line| {
            let line = line.trim_start_matches('#').trim();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let sections: [(&str, &[&str]); 6] = [
        ("tls", fields_of::<TlsFile>()),
        ("auth", fields_of::<AuthFile>()),
        ("memdr", fields_of::<MemDrFile>()),
        ("migration", fields_of::<MigrationFile>()),
        ("limits", fields_of::<LimitsFile>()),
        (
            "machine",
            fields_of::<crate::registry::machine::MachineConfig>(),
        ),
    ];
    let tables = ["local_users"];
    for key in fields_of::<File>() {
        if tables.contains(key) || sections.iter().any(|(s, _)| s == key) {
            assert!(text.contains(&format!("\n[{key}]\n")), "no [{key}]");
        } else {
            assert!(named(key), "{key} is not in deploy/ldmd.toml");
        }
    }
    for (section, keys) in sections {
        for key in keys {
            assert!(named(key), "{section}.{key} is not in deploy/ldmd.toml");
        }
    }
    assert!(
        fields_of::<LimitsFile>().len() > 25,
        "every limit, not a few"
    );
}
