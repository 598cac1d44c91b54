//! What each subcommand sends and how its reply is shown: the command line turned into request
//! documents (`ldmd::cli::request`) and a [`View`]. Pure, like the builders it calls.

use ldmd::cli::request::{self, UsageError};
use ldmd::ldm::action::Action;
use ldmd::ldm::document::Document;

use crate::Failure;
use crate::args::Command;

/// Builds a document once the owner of a service is known (or known to be unknown). `Fn`, so
/// that the document can be built once without an owner to check it before connecting.
pub type WithOwner = Box<dyn Fn(Option<&str>) -> Result<Document, UsageError>>;

/// A command whose document needs the owner of a service, found by a list-services first.
pub struct ServiceAction {
    pub service: String,
    pub build: WithOwner,
}

pub struct Plan {
    pub document: Result<Document, ServiceAction>,
    pub view: View,
}

/// How to print a command's reply.
#[derive(Clone, Debug)]
pub enum View {
    /// A write: nothing on success (as the ldm CLI), the outcome in JSON.
    Quiet,
    Table,
    Parseable,
    Long {
        parseable: bool,
    },
    Constraints {
        parseable: bool,
    },
    /// `list-constraints -x`: the XML that recreates the domains.
    ConstraintsXml,
    Services {
        parseable: bool,
    },
    Devices {
        all: bool,
        parseable: bool,
        classes: Vec<String>,
    },
    Io {
        parseable: bool,
    },
    Spconfig {
        parseable: bool,
    },
    Variables {
        names: Vec<String>,
        parseable: bool,
    },
}

/// Splits `key=value` properties (first) from the `n` positional operands (last).
fn split(
    operands: Vec<String>,
    n: usize,
    form: &str,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    if operands.len() < n
        || operands[operands.len() - n..]
            .iter()
            .any(|o| o.contains('='))
    {
        return Err(Failure::Usage(format!("expected {form}")));
    }
    let mut props = operands;
    let positional = props.split_off(props.len() - n);
    Ok((props, positional))
}

fn quiet(document: Result<Document, UsageError>) -> Result<Plan, Failure> {
    Ok(Plan {
        document: Ok(document?),
        view: View::Quiet,
    })
}

fn by_service(
    service: String,
    build: impl Fn(Option<&str>) -> Result<Document, UsageError> + 'static,
) -> Result<Plan, Failure> {
    Ok(Plan {
        document: Err(ServiceAction {
            service,
            build: Box::new(build),
        }),
        view: View::Quiet,
    })
}

/// What `command` sends and how its reply is shown. Everything that can be refused without
/// the daemon is refused here: operands, and text XML cannot carry.
pub fn plan(command: Command) -> Result<Plan, Failure> {
    let plan = plan_command(command)?;
    match &plan.document {
        Ok(document) => request::check_characters(document)?,
        Err(action) => request::check_characters(&(action.build)(None)?)?,
    }
    Ok(plan)
}

fn plan_command(command: Command) -> Result<Plan, Failure> {
    let listing = |actions: &[Action], domains: &[String], view: View| {
        Ok(Plan {
            document: Ok(request::list(actions, domains)),
            view,
        })
    };
    match command {
        Command::ListDomain {
            long,
            extended,
            parseable,
            domains,
        } if long || extended => Ok(Plan {
            document: Ok(request::list_with_service_owners(
                &[Action::ListDomain, Action::ListBindings],
                &domains,
            )),
            view: View::Long { parseable },
        }),
        Command::ListDomain {
            parseable, domains, ..
        } => listing(
            &[Action::ListDomain],
            &domains,
            if parseable {
                View::Parseable
            } else {
                View::Table
            },
        ),
        Command::ListBindings {
            parseable, domains, ..
        } => Ok(Plan {
            document: Ok(request::list_with_service_owners(
                &[Action::ListDomain, Action::ListBindings],
                &domains,
            )),
            view: View::Long { parseable },
        }),
        Command::ListConstraints {
            parseable,
            xml,
            domains,
            ..
        } => Ok(Plan {
            document: Ok(request::list_with_service_owners(
                &[Action::ListConstraints],
                &domains,
            )),
            view: if xml {
                View::ConstraintsXml
            } else {
                View::Constraints { parseable }
            },
        }),
        Command::ListServices { parseable, domains } => listing(
            &[Action::ListServices],
            &domains,
            View::Services { parseable },
        ),
        Command::ListDevices {
            all,
            parseable,
            classes,
        } => Ok(Plan {
            document: Ok(request::list_devices(all)),
            view: View::Devices {
                all,
                parseable,
                classes,
            },
        }),
        Command::ListIo { parseable } => Ok(Plan {
            document: Ok(request::list_devices(true)),
            view: View::Io { parseable },
        }),
        Command::ListSpconfig { parseable } => Ok(Plan {
            document: Ok(request::list_all(Action::ListSpconfig)),
            view: View::Spconfig { parseable },
        }),
        Command::ListVariable {
            parseable,
            mut operands,
        } => {
            let domain = operands.pop().unwrap_or_default();
            listing(
                &[Action::ListVariable],
                &[domain],
                View::Variables {
                    names: operands,
                    parseable,
                },
            )
        }
        Command::AddDomain { operands, .. } => {
            let (props, names): (Vec<String>, Vec<String>) =
                operands.into_iter().partition(|o| o.contains('='));
            if names.is_empty() {
                return Err(Failure::Usage("add-domain: name the domain".into()));
            }
            quiet(request::add_domain(&names, &props))
        }
        Command::SetDomain { operands } => {
            let (props, name) = split(operands, 1, "PROPERTY=VALUE... NAME")?;
            quiet(request::set_domain(&name[0], &props))
        }
        Command::RemoveDomain { all, domains } => quiet(Ok(request::on_domains(
            Action::RemoveDomain,
            &domains,
            all,
            &[],
        ))),
        Command::BindDomain { domain } => quiet(Ok(request::on_domains(
            Action::BindDomain,
            &[domain],
            false,
            &[],
        ))),
        Command::UnbindDomain { domain } => quiet(Ok(request::on_domains(
            Action::UnbindDomain,
            &[domain],
            false,
            &[],
        ))),
        Command::StartDomain { all, domains } => quiet(Ok(request::on_domains(
            Action::StartDomain,
            &domains,
            all,
            &[],
        ))),
        Command::StopDomain {
            force,
            reboot,
            all,
            domains,
        } => {
            let mut options = Vec::new();
            if force {
                options.push("-f");
            }
            if reboot {
                options.push("-r");
            }
            quiet(Ok(request::on_domains(
                Action::StopDomain,
                &domains,
                all,
                &options,
            )))
        }
        Command::PanicDomain { domain } => quiet(Ok(request::on_domains(
            Action::PanicDomain,
            &[domain],
            false,
            &[],
        ))),
        Command::AddVcpu(c) => quiet(request::vcpu(
            Action::AddVcpu,
            &c.number,
            &c.domain,
            c.cores,
        )),
        Command::SetVcpu(c) => quiet(request::vcpu(
            Action::SetVcpu,
            &c.number,
            &c.domain,
            c.cores,
        )),
        Command::RemoveVcpu(c) => quiet(request::vcpu(
            Action::RemoveVcpu,
            &c.number,
            &c.domain,
            c.cores,
        )),
        Command::AddCore(c) => quiet(request::vcpu(Action::AddVcpu, &c.number, &c.domain, true)),
        Command::SetCore(c) => quiet(request::vcpu(Action::SetVcpu, &c.number, &c.domain, true)),
        Command::RemoveCore(c) => quiet(request::vcpu(
            Action::RemoveVcpu,
            &c.number,
            &c.domain,
            true,
        )),
        Command::AddCrypto(c) => quiet(request::mau(Action::AddMau, &c.number, &c.domain)),
        Command::SetCrypto(c) => quiet(request::mau(Action::SetMau, &c.number, &c.domain)),
        Command::RemoveCrypto(c) => quiet(request::mau(Action::RemoveMau, &c.number, &c.domain)),
        Command::AddMemory(s) => quiet(request::memory(
            Action::AddMemory,
            &s.size,
            &s.domain,
            s.auto_adj,
        )),
        Command::SetMemory(s) => quiet(request::memory(
            Action::SetMemory,
            &s.size,
            &s.domain,
            s.auto_adj,
        )),
        Command::RemoveMemory(s) => quiet(request::memory(
            Action::RemoveMemory,
            &s.size,
            &s.domain,
            s.auto_adj,
        )),
        Command::AddVds { service, domain } => quiet(Ok(request::vds(
            Action::AddVdiskserver,
            &service,
            Some(&domain),
        ))),
        Command::RemoveVds { service } => by_service(service.clone(), move |owner| {
            Ok(request::vds(Action::RemoveVdiskserver, &service, owner))
        }),
        Command::AddVdsdev { force, operands } => {
            let (props, positional) =
                split(operands, 2, "[PROPERTY=VALUE...] BACKEND VOLUME@SERVICE")?;
            let (_, service) = request::volume_at_service(&positional[1])?;
            by_service(service.to_owned(), move |owner| {
                request::add_vdsdev(&positional[0], &positional[1], &props, force, owner)
            })
        }
        Command::RemoveVdsdev { volume } => {
            let (_, service) = request::volume_at_service(&volume)?;
            by_service(service.to_owned(), move |owner| {
                request::remove_vdsdev(&volume, owner)
            })
        }
        Command::AddVdisk { operands } => {
            let (props, p) = split(operands, 3, "[timeout=SECONDS] DISK VOLUME@SERVICE DOMAIN")?;
            quiet(request::add_vdisk(&p[0], &p[1], &p[2], &props))
        }
        Command::RemoveVdisk { disk, domain } => quiet(Ok(request::remove_vdisk(&disk, &domain))),
        Command::AddVsw { operands } => {
            let (props, p) = split(operands, 2, "[PROPERTY=VALUE...] SERVICE DOMAIN")?;
            quiet(request::vsw(Action::AddVswitch, &p[0], Some(&p[1]), &props))
        }
        Command::SetVsw { operands } => {
            let (props, p) = split(operands, 1, "PROPERTY=VALUE... SERVICE")?;
            let service = p[0].clone();
            by_service(service.clone(), move |owner| {
                request::vsw(Action::SetVswitch, &service, owner, &props)
            })
        }
        Command::RemoveVsw { service } => by_service(service.clone(), move |owner| {
            request::vsw(Action::RemoveVswitch, &service, owner, &[])
        }),
        Command::AddVnet { operands } => {
            let (props, p) = split(operands, 3, "[PROPERTY=VALUE...] NAME SERVICE DOMAIN")?;
            quiet(request::vnet(
                Action::AddVnet,
                &p[0],
                Some(&p[1]),
                &p[2],
                &props,
            ))
        }
        Command::SetVnet { operands } => {
            let (props, p) = split(operands, 2, "PROPERTY=VALUE... NAME DOMAIN")?;
            quiet(request::vnet(Action::SetVnet, &p[0], None, &p[1], &props))
        }
        Command::RemoveVnet { name, domain } => {
            quiet(request::vnet(Action::RemoveVnet, &name, None, &domain, &[]))
        }
        Command::AddVcc {
            port_range,
            service,
            domain,
        } => quiet(request::vcc(
            Action::AddVconscon,
            &service,
            Some(&domain),
            Some(&port_range),
        )),
        Command::SetVcc {
            port_range,
            service,
        } => by_service(service.clone(), move |owner| {
            request::vcc(Action::SetVconscon, &service, owner, Some(&port_range))
        }),
        Command::RemoveVcc { service } => by_service(service.clone(), move |owner| {
            request::vcc(Action::RemoveVconscon, &service, owner, None)
        }),
        Command::SetVcons { operands } => {
            let (props, p) = split(operands, 1, "PROPERTY=VALUE... DOMAIN")?;
            quiet(request::set_vcons(&p[0], &props))
        }
        Command::AddVariable { mut operands } => {
            let domain = operands.pop().unwrap_or_default();
            quiet(request::variables(Action::AddVariable, &operands, &domain))
        }
        Command::SetVariable { mut operands } => {
            let domain = operands.pop().unwrap_or_default();
            quiet(request::variables(Action::SetVariable, &operands, &domain))
        }
        Command::RemoveVariable { mut operands } => {
            let domain = operands.pop().unwrap_or_default();
            quiet(request::variables(
                Action::RemoveVariable,
                &operands,
                &domain,
            ))
        }
        Command::AddIo { device, domain } => {
            quiet(Ok(request::io(Action::AddIo, &device, &domain)))
        }
        Command::RemoveIo { device, domain } => {
            quiet(Ok(request::io(Action::RemoveIo, &device, &domain)))
        }
        Command::AddSpconfig { name } => quiet(Ok(request::spconfig(Action::AddSpconfig, &name))),
        Command::SetSpconfig { name } => quiet(Ok(request::spconfig(Action::SetSpconfig, &name))),
        Command::RemoveSpconfig { name } => {
            quiet(Ok(request::spconfig(Action::RemoveSpconfig, &name)))
        }
        Command::CancelOperation {
            force,
            operation,
            domain,
        } => quiet(request::cancel_operation(&operation, &domain, force)),
        Command::CancelReconf { domain } => quiet(Ok(request::on_domains(
            Action::RemoveReconf,
            &[domain],
            false,
            &[],
        ))),
        Command::Events { .. } | Command::Xml { .. } | Command::MigrateDomain { .. } => {
            Err(Failure::Usage("handled before planning".into()))
        }
    }
}
