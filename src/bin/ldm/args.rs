//! The command line of `ldm`: the ldm CLI's subcommands, aliases and operands, plus how to
//! reach the daemon. Operands that are `key=value` properties come before the positional
//! operands, as in the ldm CLI (`ldm add-vsw net-dev=net0 primary-vsw0 primary`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ldm",
    disable_version_flag = true,
    about = "Command-line client of ldmd, the Logical Domains Manager daemon",
    after_help = "Exit status: 0 success, 1 the daemon refused (its resp_msg on stderr), 2 usage \
                  or an untrusted local socket, 3 ldmd unreachable, 4 authentication failed, \
                  5 TLS, protocol or timeout (and events whose stream ended early)."
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    /// Output: text (default), json, status (`list`), or for `list -l` and `list-bindings` the
    /// sections to show (console,core,cpu,crypto,disk,domain,memory,network,physio,resmgmt,
    /// serial,stats), each also by a prefix no other shares (net, mem); other commands refuse
    /// sections.
    #[arg(short = 'o', long = "output", global = true, value_name = "FORMAT")]
    pub output: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach and trust the daemon.
#[derive(Args, Debug, Default)]
pub struct Connection {
    /// The daemon's Unix socket [default: the one of --config/--state-dir, else env
    /// LDMD_SOCKET, else ./ldmd-state/ldmd.sock if ./ldmd-state exists, else /run/ldmd/ldmd.sock]
    #[arg(
        id = "conn_socket",
        long = "socket",
        global = true,
        value_name = "PATH"
    )]
    pub socket: Option<PathBuf>,
    /// The daemon's state directory: its socket and certificate are found there.
    #[arg(
        id = "conn_state_dir",
        long = "state-dir",
        global = true,
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// The daemon's configuration file, read as ldmd reads it (socket, state_dir, tls).
    #[arg(
        id = "conn_config",
        long = "config",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Connect over TCP to HOST[:PORT] (port 6482 by default) instead of the Unix socket.
    #[arg(long, global = true, value_name = "HOST[:PORT]")]
    pub host: Option<String>,
    /// Log in as NAME (SASL PLAIN); the password comes from --password-file, LDM_PASSWORD
    /// or a prompt on the terminal.
    #[arg(id = "conn_user", long = "user", global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Read the password from the first line of FILE (it beats LDM_PASSWORD).
    #[arg(
        id = "conn_password_file",
        long = "password-file",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// The daemon's XMPP domain [default: the host name, or localhost for an address].
    #[arg(
        id = "conn_domain",
        long = "domain",
        global = true,
        value_name = "NAME"
    )]
    pub domain: Option<String>,
    /// Verify the daemon's certificate against this PEM file (its tls-cert.pem, or a CA).
    #[arg(id = "conn_ca", long = "ca", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept only the certificate with this SHA-256 fingerprint (as ldmd prints it).
    #[arg(
        id = "conn_fingerprint",
        long = "fingerprint",
        global = true,
        value_name = "SHA256"
    )]
    pub fingerprint: Option<String>,
    /// Do not verify the daemon's certificate (tests only; with --user, a warning on stderr).
    #[arg(id = "conn_insecure", long = "insecure", global = true)]
    pub insecure: bool,
    /// Seconds to reach the daemon: the connect, STARTTLS, the TLS handshake and the login.
    #[arg(
        id = "conn_connect_timeout",
        long = "connect-timeout",
        global = true,
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub connect_timeout: u64,
    /// Seconds to send each request and wait for its reply (a memory DR answers when done).
    #[arg(
        id = "conn_timeout",
        long = "timeout",
        global = true,
        value_name = "SECONDS",
        default_value_t = 300
    )]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List domains: the table, -l the long form, -p parseable, -e extended.
    #[command(name = "list-domain", visible_aliases = ["list", "ls", "ls-domain"])]
    ListDomain {
        /// The long form: every resource, service and device of each domain
        #[arg(short = 'l', long)]
        long: bool,
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
        /// Extended: the long form with the devices Oracle's ldm sets up by itself (ldmd sets
        /// up none, so it is the long form).
        #[arg(short = 'e', long)]
        extended: bool,
        /// The domains to list [default: all of them]
        domains: Vec<String>,
    },
    /// List domains with what each resource is bound to.
    #[command(name = "list-bindings", visible_alias = "ls-bindings")]
    ListBindings {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
        /// Extended (accepted; ldmd sets up no devices by itself).
        #[arg(short = 'e', long)]
        extended: bool,
        /// The domains to list [default: all of them]
        domains: Vec<String>,
    },
    /// List the constraints of domains; -x as the XML that recreates them (`ldm add-domain -i`).
    #[command(name = "list-constraints", visible_alias = "ls-constraints")]
    ListConstraints {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long, conflicts_with = "xml")]
        parseable: bool,
        /// The constraints as the XML that recreates them (ldm add-domain -i)
        #[arg(short = 'x', long)]
        xml: bool,
        /// Extended (accepted; ldmd sets up no devices by itself).
        #[arg(short = 'e', long)]
        extended: bool,
        /// The domains to list [default: all of them]
        domains: Vec<String>,
    },
    /// List free resources and I/O devices, -a all of them with their owners
    /// (core, cpu, crypto, memory or mem, io).
    #[command(name = "list-devices", visible_alias = "ls-devices")]
    ListDevices {
        /// Every resource and device, bound ones too, with its owner
        #[arg(short = 'a', long)]
        all: bool,
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
        /// Which: core, cpu, crypto, memory (or mem), io [default: all of them]
        #[arg(value_parser = ["core", "cpu", "crypto", "memory", "mem", "io"])]
        classes: Vec<String>,
    },
    /// List every I/O device: its type, bus, owner and status.
    #[command(name = "list-io", visible_alias = "ls-io")]
    ListIo {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
    },
    /// List virtual I/O services (VCC, VSW, VDS).
    #[command(name = "list-services", visible_alias = "ls-services")]
    ListServices {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
        /// The domains to list [default: all of them]
        domains: Vec<String>,
    },
    /// List SP configurations.
    #[command(
        name = "list-spconfig",
        visible_aliases = ["list-config", "ls-spconfig", "ls-config"]
    )]
    ListSpconfig {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
    },
    /// List variables of a domain: [NAME...] DOMAIN.
    #[command(
        name = "list-variable",
        visible_aliases = ["list-var", "ls-variable", "ls-var"]
    )]
    ListVariable {
        /// Machine-readable output: one record per line, fields separated by | (as Oracle's ldm -p)
        #[arg(short = 'p', long)]
        parseable: bool,
        /// Variable names to show (all of them without), then the domain
        #[arg(required = true, value_name = "[NAME...] DOMAIN")]
        operands: Vec<String>,
    },
    /// Add domains: [mac-addr=.. hostid=.. failure-policy=.. master=..] NAME...
    #[command(name = "add-domain", visible_alias = "create")]
    AddDomain {
        /// Recreate domains from the XML `ldm list-constraints -x` wrote.
        #[arg(
            short = 'i',
            long = "input",
            value_name = "FILE",
            conflicts_with = "operands"
        )]
        input: Option<PathBuf>,
        /// Properties (mac-addr=, hostid=, failure-policy=, master=), then the new domains' names
        #[arg(
            required_unless_present = "input",
            value_name = "[PROPERTY=VALUE...] NAME..."
        )]
        operands: Vec<String>,
    },
    /// Change domain properties: PROPERTY=VALUE... NAME
    #[command(name = "set-domain")]
    SetDomain {
        /// PROPERTY=VALUE pairs (mac-addr, hostid, failure-policy, master), then the domain
        #[arg(required = true, value_name = "PROPERTY=VALUE... NAME")]
        operands: Vec<String>,
    },
    /// Remove domains (inactive ones), or -a every domain but the control domain.
    #[command(name = "remove-domain", visible_aliases = ["rm-domain", "destroy"])]
    RemoveDomain {
        /// Every domain but the control domain
        #[arg(short = 'a', long = "all", conflicts_with = "domains")]
        all: bool,
        /// The domains to remove (inactive ones)
        #[arg(required_unless_present = "all")]
        domains: Vec<String>,
    },
    /// Bind a domain's resources.
    #[command(name = "bind-domain", visible_alias = "bind")]
    BindDomain {
        /// The domain to bind
        domain: String,
    },
    /// Release a bound domain's resources.
    #[command(name = "unbind-domain", visible_alias = "unbind")]
    UnbindDomain {
        /// The domain to unbind
        domain: String,
    },
    /// Start bound domains, or -a every bound domain.
    #[command(name = "start-domain", visible_alias = "start")]
    StartDomain {
        /// Every bound domain
        #[arg(short = 'a', long = "all", conflicts_with = "domains")]
        all: bool,
        /// The domains to start
        #[arg(required_unless_present = "all")]
        domains: Vec<String>,
    },
    /// Stop active domains (-f force, -r reboot), or -a every active domain.
    #[command(name = "stop-domain", visible_alias = "stop")]
    StopDomain {
        /// Stop at once, without waiting for the guest to shut down
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Reboot the domain instead of stopping it
        #[arg(short = 'r', long = "reboot")]
        reboot: bool,
        /// Every active domain but the control domain
        #[arg(short = 'a', long = "all", conflicts_with = "domains")]
        all: bool,
        /// The domains to stop
        #[arg(required_unless_present = "all")]
        domains: Vec<String>,
    },
    /// Panic a domain's guest.
    #[command(name = "panic-domain", visible_alias = "panic")]
    PanicDomain {
        /// The domain whose guest panics
        domain: String,
    },
    #[command(name = "add-vcpu")]
    /// Add virtual CPUs: N DOMAIN (-c: whole cores).
    AddVcpu(Count),
    /// Set virtual CPUs: N DOMAIN (-c: whole cores).
    #[command(name = "set-vcpu")]
    SetVcpu(Count),
    /// Remove virtual CPUs: N DOMAIN (-c: whole cores).
    #[command(name = "remove-vcpu", visible_alias = "rm-vcpu")]
    RemoveVcpu(Count),
    /// Add whole cores: N DOMAIN.
    #[command(name = "add-core")]
    AddCore(Count),
    /// Set whole cores: N DOMAIN.
    #[command(name = "set-core")]
    SetCore(Count),
    /// Remove whole cores: N DOMAIN.
    #[command(name = "remove-core", visible_alias = "rm-core")]
    RemoveCore(Count),
    /// Add crypto units: N DOMAIN.
    #[command(name = "add-crypto", visible_alias = "add-mau")]
    AddCrypto(Count),
    /// Set crypto units: N DOMAIN.
    #[command(name = "set-crypto", visible_alias = "set-mau")]
    SetCrypto(Count),
    /// Remove crypto units: N DOMAIN.
    #[command(name = "remove-crypto", visible_aliases = ["rm-crypto", "remove-mau", "rm-mau"])]
    RemoveCrypto(Count),
    /// Add memory: SIZE[K|M|G|T] DOMAIN.
    #[command(name = "add-memory", visible_alias = "add-mem")]
    AddMemory(Size),
    /// Set memory: SIZE[K|M|G|T] DOMAIN.
    #[command(name = "set-memory", visible_alias = "set-mem")]
    SetMemory(Size),
    /// Remove memory: SIZE[K|M|G|T] DOMAIN.
    #[command(name = "remove-memory", visible_aliases = ["rm-memory", "rm-mem", "remove-mem"])]
    RemoveMemory(Size),
    /// Add a virtual disk service: SERVICE DOMAIN.
    #[command(name = "add-vds", visible_alias = "add-vdiskserver")]
    AddVds {
        /// The new virtual disk service's name (as primary-vds0)
        service: String,
        /// The service domain that provides it
        domain: String,
    },
    /// Remove a virtual disk service: SERVICE.
    #[command(name = "remove-vds", visible_aliases = ["rm-vds", "remove-vdiskserver"])]
    RemoveVds {
        /// The virtual disk service to remove
        service: String,
    },
    /// Export a back end: [-f] [options=ro,slice,excl] [mpgroup=..] BACKEND VOLUME@SERVICE.
    #[command(name = "add-vdsdev", visible_alias = "add-vdiskserverdevice")]
    AddVdsdev {
        /// Export the back end even if another volume exports it already
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Properties (options=ro,slice,excl, mpgroup=), then BACKEND and VOLUME@SERVICE
        #[arg(
            required = true,
            value_name = "[PROPERTY=VALUE...] BACKEND VOLUME@SERVICE"
        )]
        operands: Vec<String>,
    },
    /// Remove an exported volume: VOLUME@SERVICE.
    #[command(name = "remove-vdsdev", visible_aliases = ["rm-vdsdev", "remove-vdiskserverdevice"])]
    RemoveVdsdev {
        /// The volume to remove, as VOLUME@SERVICE
        volume: String,
    },
    /// Add a virtual disk: [timeout=..] DISK VOLUME@SERVICE DOMAIN.
    #[command(name = "add-vdisk")]
    AddVdisk {
        /// [timeout=SECONDS], then the disk's name, its VOLUME@SERVICE and the domain
        #[arg(
            required = true,
            value_name = "[timeout=SECONDS] DISK VOLUME@SERVICE DOMAIN"
        )]
        operands: Vec<String>,
    },
    /// Remove a virtual disk: DISK DOMAIN.
    #[command(name = "remove-vdisk", visible_alias = "rm-vdisk")]
    RemoveVdisk {
        /// The virtual disk's name
        disk: String,
        /// The domain it belongs to
        domain: String,
    },
    /// Add a virtual switch: [net-dev=.. mac-addr=.. pvid=.. vid=.. mtu=.. mode=.. linkprop=..
    /// inter-vnet-link=on|off] SERVICE DOMAIN.
    #[command(name = "add-vsw", visible_alias = "add-vswitch")]
    AddVsw {
        /// Properties (net-dev=, mac-addr=, pvid=, vid=, mtu=, mode=, linkprop=, inter-vnet-link=), then the switch's name and its service domain
        #[arg(required = true, value_name = "[PROPERTY=VALUE...] SERVICE DOMAIN")]
        operands: Vec<String>,
    },
    /// Change a virtual switch: PROPERTY=VALUE... SERVICE.
    #[command(name = "set-vsw", visible_alias = "set-vswitch")]
    SetVsw {
        /// PROPERTY=VALUE pairs, as add-vsw takes them, then the switch's name
        #[arg(required = true, value_name = "PROPERTY=VALUE... SERVICE")]
        operands: Vec<String>,
    },
    /// Remove a virtual switch: SERVICE.
    #[command(name = "remove-vsw", visible_aliases = ["rm-vsw", "remove-vswitch"])]
    RemoveVsw {
        /// The virtual switch to remove
        service: String,
    },
    /// Add a virtual network device: [mac-addr=.. pvid=.. vid=.. mode=.. linkprop=..] NAME
    /// SERVICE DOMAIN.
    #[command(name = "add-vnet")]
    AddVnet {
        /// Properties (mac-addr=, pvid=, vid=, mode=, linkprop=), then the device's name, its switch and the domain
        #[arg(
            required = true,
            value_name = "[PROPERTY=VALUE...] NAME SERVICE DOMAIN"
        )]
        operands: Vec<String>,
    },
    /// Change a virtual network device: PROPERTY=VALUE... NAME DOMAIN.
    #[command(name = "set-vnet")]
    SetVnet {
        /// PROPERTY=VALUE pairs, as add-vnet takes them, then the device's name and the domain
        #[arg(required = true, value_name = "PROPERTY=VALUE... NAME DOMAIN")]
        operands: Vec<String>,
    },
    /// Remove a virtual network device: NAME DOMAIN.
    #[command(name = "remove-vnet", visible_alias = "rm-vnet")]
    RemoveVnet {
        /// The virtual network device's name
        name: String,
        /// The domain it belongs to
        domain: String,
    },
    /// Add a console concentrator: port-range=MIN-MAX SERVICE DOMAIN.
    #[command(name = "add-vcc", visible_alias = "add-vconscon")]
    AddVcc {
        /// The console ports it hands out: port-range=MIN-MAX
        port_range: String,
        /// The new console concentrator's name (as primary-vcc0)
        service: String,
        /// The service domain that provides it
        domain: String,
    },
    /// Change a console concentrator's ports: port-range=MIN-MAX SERVICE.
    #[command(name = "set-vcc", visible_alias = "set-vconscon")]
    SetVcc {
        /// The new console ports: port-range=MIN-MAX
        port_range: String,
        /// The console concentrator to change
        service: String,
    },
    /// Remove a console concentrator: SERVICE.
    #[command(name = "remove-vcc", visible_aliases = ["rm-vcc", "remove-vconscon"])]
    RemoveVcc {
        /// The console concentrator to remove
        service: String,
    },
    /// Change a domain's console: [port=..] [group=..] [service=..] [log=on|off] DOMAIN.
    #[command(name = "set-vcons", visible_alias = "set-vconsole")]
    SetVcons {
        /// [port=N] [group=NAME] [service=VCC] [log=on|off], then the domain
        #[arg(required = true, value_name = "PROPERTY=VALUE... DOMAIN")]
        operands: Vec<String>,
    },
    /// Add variables: NAME=VALUE... DOMAIN.
    #[command(name = "add-variable", visible_alias = "add-var")]
    AddVariable {
        /// NAME=VALUE pairs, then the domain
        #[arg(required = true, value_name = "NAME=VALUE... DOMAIN")]
        operands: Vec<String>,
    },
    /// Set variables: NAME=VALUE... DOMAIN.
    #[command(name = "set-variable", visible_alias = "set-var")]
    SetVariable {
        /// NAME=VALUE pairs, then the domain
        #[arg(required = true, value_name = "NAME=VALUE... DOMAIN")]
        operands: Vec<String>,
    },
    /// Remove variables: NAME... DOMAIN.
    #[command(name = "remove-variable", visible_aliases = ["rm-variable", "rm-var", "remove-var"])]
    RemoveVariable {
        /// Variable names, then the domain
        #[arg(required = true, value_name = "NAME... DOMAIN")]
        operands: Vec<String>,
    },
    /// Give a physical I/O device to a domain: DEVICE DOMAIN.
    #[command(name = "add-io")]
    AddIo {
        /// The device, by its path (pci@300) or alias (pci_0, /SYS/MB/PCIE0)
        device: String,
        /// The domain that gets it
        domain: String,
    },
    /// Take a physical I/O device from a domain: DEVICE DOMAIN.
    #[command(name = "remove-io", visible_alias = "rm-io")]
    RemoveIo {
        /// The device, by its path (pci@300) or alias (pci_0, /SYS/MB/PCIE0)
        device: String,
        /// The domain that has it
        domain: String,
    },
    /// Save the current configuration on the SP: NAME.
    #[command(name = "add-spconfig", visible_alias = "add-config")]
    AddSpconfig {
        /// The new SP configuration's name
        name: String,
    },
    /// Select the SP configuration for the next power-on: NAME.
    #[command(name = "set-spconfig", visible_alias = "set-config")]
    SetSpconfig {
        /// The SP configuration to power on with next
        name: String,
    },
    /// Remove a saved SP configuration: NAME.
    #[command(name = "remove-spconfig", visible_aliases = ["rm-spconfig", "remove-config", "rm-config"])]
    RemoveSpconfig {
        /// The SP configuration to remove
        name: String,
    },
    /// Cancel a long operation: migration|reconf|memdr DOMAIN. With -f and migration: restore
    /// an in-doubt migration here without asking the target (only when it is gone for good).
    #[command(name = "cancel-operation", visible_alias = "cancel-op")]
    CancelOperation {
        /// With migration: restore an in-doubt migration here without asking the target (only when it is gone for good)
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// migration, reconf or memdr
        operation: String,
        /// The domain whose operation ends
        domain: String,
    },
    /// Migrate a domain to another ldmd: [-f] [-n] [-p FILE] SOURCE [USER@]HOST[:NAME].
    /// USER defaults to your login name; the target's password comes from -p FILE, then
    /// LDM_TARGET_PASSWORD, then a prompt. The reply waits for the outcome (see --timeout; a
    /// dropped ldm does not cancel the migration).
    #[command(name = "migrate-domain", visible_alias = "migrate")]
    MigrateDomain {
        /// Override soft checks on the target (a console port in use is replaced by a free one).
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Only run the checks, on both sides; nothing changes.
        #[arg(short = 'n', long = "dry-run")]
        dry_run: bool,
        /// Read the target user's password from the first line of FILE.
        #[arg(short = 'p', long = "target-password-file", value_name = "FILE")]
        target_password_file: Option<PathBuf>,
        /// The target daemon's XMPP port.
        #[arg(long = "target-port", value_name = "PORT", default_value_t = 6482)]
        target_port: u16,
        /// The domain to migrate
        source: String,
        /// [USER@]HOST[:NAME]: the target host, its user, and the domain's name there.
        target: String,
    },
    /// Discard the control domain's delayed reconfiguration: DOMAIN.
    #[command(name = "cancel-reconf", visible_alias = "remove-reconf")]
    CancelReconf {
        /// The domain whose delayed reconfiguration is discarded
        domain: String,
    },
    /// Subscribe to events and print one line per event until interrupted.
    Events {
        /// all, domain, resource or hardware.
        #[arg(long, default_value = "all")]
        class: String,
        /// Stop after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Send a raw LDM_interface document (FILE, or - for stdin) and print the reply.
    Xml {
        /// The document to send: a file, or - for stdin
        file: String,
    },
}

#[derive(Args, Debug)]
pub struct Count {
    /// Whole cores instead of virtual CPUs (add-/set-/remove-vcpu only).
    #[arg(short = 'c', long = "cores")]
    pub cores: bool,
    /// How many virtual CPUs, cores or crypto units (with -c on the vcpu commands: whole cores)
    pub number: String,
    /// The domain
    pub domain: String,
}

#[derive(Args, Debug)]
pub struct Size {
    /// Round a memory DR's size to 256M instead of refusing it.
    #[arg(long = "auto-adj")]
    pub auto_adj: bool,
    /// Memory with a unit: 4G, 512M, 1T (K, M, G, T; multiples of 256M unless --auto-adj)
    pub size: String,
    /// The domain
    pub domain: String,
}
