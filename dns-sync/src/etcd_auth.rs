//! `etcd-auth`: turns on etcd's authorization with one least-privilege identity per DNS component, so a
//! compromised dns-server cannot write the zone and dns-sync can write nothing but the records.
//!
//! etcd started with `--client-cert-auth` takes a client certificate's common name as the user once auth is
//! enabled; the users made here have no password, so a certificate signed by etcd's CA with that CN is the only
//! way to be them. What is applied, in this order, so etcd never enforces a half-made policy:
//!
//! 1. each role: exactly the permissions asked for (a prefix read, or read-write), anything else revoked;
//! 2. each user (named like its role and its certificate's CN): exactly that role;
//! 3. `root` with the root role (etcd refuses `auth enable` without it): the identity this tool itself runs as;
//! 4. `auth enable`.
//!
//! Every step reads first and changes only what differs, and "already exists" from a concurrent run counts as
//! done: the chart runs this beside every etcd member, on every start, so it must be safe to run any number of
//! times, at once, before or after auth was enabled. The decisions are pure ([`role_changes`]); the I/O edge
//! ([`apply`]) is tested against a real etcd.

use std::time::Duration;

use etcd_client::{Client, Permission, PermissionType, RoleRevokePermissionOptions};
use ops::etcd::{EtcdArgs, EtcdConfigError, EtcdConnection, prefix_end};
use proto::skydns::{KeyError, KeyLayout};

/// The user (and role) etcd requires before `auth enable`; the bootstrap's own identity.
pub const ROOT: &str = "root";

/// `etcd-auth`: enables etcd authorization with one identity per DNS component (read-only for dns-server,
/// read-write on the records for dns-sync); users are client-certificate common names, without passwords.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "etcd-auth", version, about, long_about = None)]
pub struct Config {
    /// How to reach etcd: run with a certificate whose CN is `root` (the only identity allowed to change
    /// users once auth is on). `--etcd-prefix` is the prefix of identities given without one.
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// An identity that may only read a prefix (watch and range reads included), as NAME or NAME=PREFIX
    /// (repeatable): a user and a role both called NAME, the CN of its certificate.
    #[arg(long = "read-only", env = "READ_ONLY", value_delimiter = ',')]
    pub read_only: Vec<String>,

    /// An identity that may read and write (put, delete, transactions) a prefix, as NAME or NAME=PREFIX
    /// (repeatable).
    #[arg(long = "read-write", env = "READ_WRITE", value_delimiter = ',')]
    pub read_write: Vec<String>,

    /// Apply once and exit (1 on failure). Without it: retry until applied, report ready, and stay until
    /// SIGTERM, so it can run as a container beside etcd.
    #[arg(long)]
    pub once: bool,

    /// Logging, ops endpoint and drain.
    #[command(flatten)]
    pub ops: ops::OpsArgs,
}

/// A flag value that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// etcd flags.
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
    /// A prefix is not an absolute etcd path.
    #[error("{flag} {value:?}: {source}")]
    Prefix {
        /// The flag.
        flag: &'static str,
        /// As given.
        value: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// A name etcd could not take as a certificate's CN, or `root` (which has every right already).
    #[error("{flag} {value:?}: the name must be letters, digits, '-', '_' or '.', and not `root`")]
    Name {
        /// The flag.
        flag: &'static str,
        /// As given.
        value: String,
    },
    /// One name asked for twice.
    #[error("{0:?} is named more than once")]
    Duplicate(String),
    /// Nothing to grant: enabling auth would lock every component out.
    #[error("name at least one identity (--read-only or --read-write)")]
    Empty,
}

/// What an identity may do under its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range reads and watches.
    Read,
    /// Reads, puts, deletes and transactions.
    ReadWrite,
}

impl Access {
    fn permission_type(self) -> PermissionType {
        match self {
            Access::Read => PermissionType::Read,
            Access::ReadWrite => PermissionType::Readwrite,
        }
    }
}

/// One identity: user, role and certificate CN all `name`, allowed `access` to the keys under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User, role and CN.
    pub name: String,
    /// What it may do.
    pub access: Access,
    /// The key range's prefix, with its trailing `/` (`/skydns/`): the range every daemon reads and writes
    /// ([`KeyLayout::range_prefix`]), which leaves a sibling such as `/skydnsfoo` out.
    pub prefix: String,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The connection (as root).
    pub etcd: EtcdConnection,
    /// The identities to make.
    pub identities: Vec<Identity>,
    /// Apply once and exit.
    pub once: bool,
}

impl Config {
    /// Checks every flag; touches no network.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut identities: Vec<Identity> = Vec::new();
        for (flag, values, access) in [
            ("--read-only", &self.read_only, Access::Read),
            ("--read-write", &self.read_write, Access::ReadWrite),
        ] {
            for value in values {
                let identity = parse_identity(flag, value, access, &self.etcd.etcd_prefix)?;
                if identities.iter().any(|i| i.name == identity.name) {
                    return Err(ConfigError::Duplicate(identity.name));
                }
                identities.push(identity);
            }
        }
        if identities.is_empty() {
            return Err(ConfigError::Empty);
        }
        Ok(Settings {
            etcd: self.etcd.connection()?,
            identities,
            once: self.once,
        })
    }
}

fn parse_identity(
    flag: &'static str,
    value: &str,
    access: Access,
    default_prefix: &str,
) -> Result<Identity, ConfigError> {
    let (name, prefix) = value.split_once('=').unwrap_or((value, default_prefix));
    let name_ok = !name.is_empty()
        && name != ROOT
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(ConfigError::Name {
            flag,
            value: value.to_owned(),
        });
    }
    let layout = KeyLayout::new(prefix).map_err(|source| ConfigError::Prefix {
        flag,
        value: value.to_owned(),
        source,
    })?;
    Ok(Identity {
        name: name.to_owned(),
        access,
        prefix: layout.range_prefix(),
    })
}

/// One permission of a role as etcd stores it: type (etcd's enum number), key and range end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `PermissionType` as etcd's number.
    pub kind: i32,
    /// First key.
    pub key: Vec<u8>,
    /// End of the range (exclusive); empty for a single key.
    pub range_end: Vec<u8>,
}

impl Grant {
    /// The one grant `identity` needs.
    pub fn of(identity: &Identity) -> Self {
        Self {
            kind: identity.access.permission_type() as i32,
            key: identity.prefix.as_bytes().to_vec(),
            range_end: prefix_end(&identity.prefix),
        }
    }
}

/// What to change in a role holding `current` so it holds exactly `wanted`: grants to revoke (everything
/// else, including the same range with another type: etcd keys permissions by range), then the grant to add
/// (none when it is there already).
pub fn role_changes(current: &[Grant], wanted: &Grant) -> (Vec<Grant>, Option<Grant>) {
    let revoke = current.iter().filter(|g| *g != wanted).cloned().collect();
    let add = (!current.contains(wanted)).then(|| wanted.clone());
    (revoke, add)
}

/// What [`apply`] changed (empty when etcd already held the policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// One line per change, e.g. `role dns-server: granted read on /skydns/`.
    pub changes: Vec<String>,
}

/// Makes etcd hold exactly the identities' roles and users, `root`, and auth enabled (see the module doc).
pub async fn apply(
    client: &mut Client,
    identities: &[Identity],
) -> Result<Applied, etcd_client::Error> {
    let mut applied = Applied::default();
    let roles = client.role_list().await?.roles().to_vec();
    for identity in identities {
        let name = identity.name.as_str();
        if !roles.iter().any(|r| r == name) {
            tolerate_exists(client.role_add(name).await)?;
            applied.changes.push(format!("role {name}: added"));
        }
        let current: Vec<Grant> = client
            .role_get(name)
            .await?
            .permissions()
            .iter()
            .map(|p| Grant {
                kind: p.get_type(),
                key: p.key().to_vec(),
                range_end: p.range_end().to_vec(),
            })
            .collect();
        let (revoke, add) = role_changes(&current, &Grant::of(identity));
        for grant in revoke {
            let options = (!grant.range_end.is_empty()).then(|| {
                RoleRevokePermissionOptions::new().with_range_end(grant.range_end.clone())
            });
            client
                .role_revoke_permission(name, grant.key.clone(), options)
                .await?;
            applied.changes.push(format!(
                "role {name}: revoked {}",
                describe(&grant.key, &grant.range_end)
            ));
        }
        if let Some(grant) = add {
            let permission = Permission::new(identity.access.permission_type(), grant.key.clone())
                .with_range_end(grant.range_end.clone());
            client.role_grant_permission(name, permission).await?;
            applied.changes.push(format!(
                "role {name}: granted {:?} on {}",
                identity.access,
                describe(&grant.key, &grant.range_end)
            ));
        }
    }
    let users = client.user_list().await?.users().to_vec();
    let wanted_users = identities
        .iter()
        .map(|i| i.name.as_str())
        .chain(std::iter::once(ROOT));
    for name in wanted_users {
        if !users.iter().any(|u| u == name) {
            // No password: the certificate's CN is the only way to be this user.
            let options = etcd_client::UserAddOptions::new().with_no_pwd();
            tolerate_exists(client.user_add(name, "", Some(options)).await)?;
            applied.changes.push(format!("user {name}: added"));
        }
        let roles = client.user_get(name).await?.roles().to_vec();
        // Each user holds exactly its own role (root: the root role).
        for extra in roles.iter().filter(|r| *r != name) {
            client.user_revoke_role(name, extra.as_str()).await?;
            applied
                .changes
                .push(format!("user {name}: revoked role {extra}"));
        }
        if !roles.iter().any(|r| r == name) {
            client.user_grant_role(name, name).await?;
            applied
                .changes
                .push(format!("user {name}: granted role {name}"));
        }
    }
    // etcd-client has no AuthStatus call; enabling an enabled etcd is a no-op that succeeds.
    client.auth_enable().await?;
    Ok(applied)
}

fn tolerate_exists<T>(result: Result<T, etcd_client::Error>) -> Result<(), etcd_client::Error> {
    match result {
        Ok(_) => Ok(()),
        // Another member's etcd-auth made it between our read and our write.
        Err(error) if error.to_string().contains("already exists") => Ok(()),
        Err(error) => Err(error),
    }
}

fn describe(key: &[u8], range_end: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    if range_end.is_empty() {
        key.into_owned()
    } else {
        format!("[{key}, {})", String::from_utf8_lossy(range_end))
    }
}

/// Delay between attempts while etcd is not there yet (members forming a cluster, a rollout).
const RETRY: Duration = Duration::from_secs(2);

/// Applies the policy (retrying until it is in place, unless `--once`), reports ready, then waits for the
/// shutdown signal (or returns, with `--once`).
pub async fn run(settings: Settings, context: ops::Context) -> Result<(), etcd_client::Error> {
    for warning in &settings.etcd.warnings {
        tracing::warn!("{warning}");
    }
    loop {
        let attempt = async {
            let mut client = settings.etcd.connect().await?;
            apply(&mut client, &settings.identities).await
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = context.shutdown.cancelled() => return Ok(()),
        };
        match outcome {
            Ok(applied) => {
                for change in &applied.changes {
                    tracing::info!(change = %change, "etcd auth");
                }
                tracing::info!(
                    identities = settings.identities.len(),
                    changes = applied.changes.len(),
                    "etcd auth is enabled with the identities in place"
                );
                context.health.set_ready("etcd auth applied".to_owned());
                break;
            }
            Err(error) if settings.once => return Err(error),
            Err(error) => {
                tracing::warn!(error = %error, "applying etcd auth failed; retrying");
                context
                    .health
                    .set_not_ready(format!("applying etcd auth: {error}"));
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = context.shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
    if !settings.once {
        context.shutdown.cancelled().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn validate(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["etcd-auth"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap().validate()
    }

    #[test]
    fn identities_take_the_records_range_with_its_trailing_slash() {
        let settings = validate(&[
            "--read-only",
            "dns-server",
            "--read-write",
            "dns-sync=/other/",
        ])
        .unwrap();
        assert_eq!(
            settings.identities,
            [
                Identity {
                    name: "dns-server".to_owned(),
                    access: Access::Read,
                    prefix: "/skydns/".to_owned(),
                },
                Identity {
                    name: "dns-sync".to_owned(),
                    access: Access::ReadWrite,
                    prefix: "/other/".to_owned(),
                },
            ]
        );
        let grant = Grant::of(&settings.identities[0]);
        assert_eq!(
            (grant.key, grant.range_end),
            (b"/skydns/".to_vec(), b"/skydns0".to_vec())
        );
    }

    #[test]
    fn unusable_identities_are_refused_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--read-only", "root"], "--read-only"),
            (&["--read-write", "dns sync"], "--read-write"),
            (&["--read-only", "a=skydns"], "--read-only"),
            (&["--read-only", "a", "--read-write", "a"], "\"a\""),
            (&[], "at least one"),
        ];
        for (args, expected) in cases {
            let error = validate(args).unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_role_keeps_only_its_one_grant() {
        let wanted = Grant {
            kind: PermissionType::Read as i32,
            key: b"/skydns/".to_vec(),
            range_end: b"/skydns0".to_vec(),
        };
        assert_eq!(
            role_changes(std::slice::from_ref(&wanted), &wanted),
            (vec![], None)
        );
        assert_eq!(role_changes(&[], &wanted), (vec![], Some(wanted.clone())));
        // The same range with write access, and a range elsewhere: both go, the read is added.
        let writable = Grant {
            kind: PermissionType::Readwrite as i32,
            ..wanted.clone()
        };
        let elsewhere = Grant {
            key: b"/other".to_vec(),
            range_end: Vec::new(),
            ..wanted.clone()
        };
        assert_eq!(
            role_changes(&[writable.clone(), elsewhere.clone()], &wanted),
            (vec![writable, elsewhere], Some(wanted))
        );
    }
}
