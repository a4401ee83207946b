//! Admins: API tokens (only their SHA-256 digests are stored), each with a role and a region
//! scope, and the rule of what each role may do where.
//!
//! | role | reads | writes |
//! |---|---|---|
//! | `head_office` | everything | everything |
//! | `branch_admin` | its region and the regions under it | the same |
//! | `reviewer` | everything, or its region's subtree if it has one | reviews plugins only |
//!
//! Plugin versions belong to no region: `head_office` and `branch_admin` upload them,
//! `head_office` and `reviewer` review them, and nobody reviews their own upload.
//! | `viewer` | everything, or its region's subtree if it has one | nothing |

use serde::{Deserialize, Serialize};

use super::{is_region, new_secret, region_within, secret_digest};
use crate::db::Conn;
use crate::with_conn;

/// What an admin may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, everywhere.
    HeadOffice,
    /// Everything within its region's subtree.
    BranchAdmin,
    /// Approve or reject plugin versions, and read.
    Reviewer,
    /// Read.
    Viewer,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::HeadOffice => "head_office",
            Role::BranchAdmin => "branch_admin",
            Role::Reviewer => "reviewer",
            Role::Viewer => "viewer",
        }
    }

    /// The role a name means.
    pub fn parse(name: &str) -> Option<Role> {
        [
            Role::HeadOffice,
            Role::BranchAdmin,
            Role::Reviewer,
            Role::Viewer,
        ]
        .into_iter()
        .find(|role| role.as_str() == name)
    }
}

/// An authenticated admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    /// The token's name, recorded as the actor of every change it makes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where (`None`: every region).
    pub region: Option<String>,
}

/// Why an admin may not do something: said so they know whom to ask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Admin {
    fn in_scope(&self, region: Option<&str>) -> bool {
        match (&self.region, region) {
            (None, _) => true,
            (Some(scope), Some(region)) => region_within(region, scope),
            (Some(_), None) => false,
        }
    }

    fn describe(&self) -> String {
        match &self.region {
            Some(scope) => format!("admin {:?} ({} of {scope})", self.name, self.role.as_str()),
            None => format!("admin {:?} ({})", self.name, self.role.as_str()),
        }
    }

    /// Whether the admin may read what belongs to `region` (`None`: not to one region).
    pub fn may_read(&self, region: Option<&str>) -> Result<(), Forbidden> {
        if self.role == Role::HeadOffice || self.in_scope(region) {
            return Ok(());
        }
        Err(Forbidden(match region {
            Some(region) => format!("{} cannot read region {region}", self.describe()),
            None => format!("{} can read its own region only", self.describe()),
        }))
    }

    /// Whether the admin may change what belongs to `region` (`None`: not to one region, such
    /// as a new admin token).
    pub fn may_write(&self, region: Option<&str>) -> Result<(), Forbidden> {
        match self.role {
            Role::HeadOffice => Ok(()),
            Role::BranchAdmin if self.in_scope(region) => Ok(()),
            Role::BranchAdmin => Err(Forbidden(match region {
                Some(region) => format!("{} cannot change region {region}", self.describe()),
                None => format!(
                    "{} can change its own region only; ask head office",
                    self.describe()
                ),
            })),
            Role::Reviewer | Role::Viewer => Err(Forbidden(format!(
                "{} may not change anything here; ask a branch admin or head office",
                self.describe()
            ))),
        }
    }
}

impl Admin {
    /// Whether the admin may upload plugin versions.
    pub fn may_upload(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::HeadOffice | Role::BranchAdmin => Ok(()),
            Role::Reviewer | Role::Viewer => Err(Forbidden(format!(
                "{} may not upload plugins; ask a branch admin or head office",
                self.describe()
            ))),
        }
    }

    /// Whether the admin may approve or reject plugin versions.
    pub fn may_review(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::HeadOffice | Role::Reviewer => Ok(()),
            Role::BranchAdmin | Role::Viewer => Err(Forbidden(format!(
                "{} may not review plugins; ask a reviewer or head office",
                self.describe()
            ))),
        }
    }
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// A token with the name exists.
    #[error("an admin token named {0:?} already exists; choose another name")]
    NameTaken(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks a new admin's name, role and region together.
pub fn check(name: &str, role: Role, region: Option<&str>) -> Result<(), CreateError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(CreateError::Invalid(
            "a name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ));
    }
    if let Some(region) = region
        && !is_region(region)
    {
        return Err(CreateError::Invalid(format!(
            "{region:?} is not a region: 1 to 64 lowercase letters, digits or '-'"
        )));
    }
    match (role, region) {
        (Role::HeadOffice, Some(_)) => Err(CreateError::Invalid(
            "a head_office token covers every region; give no region".into(),
        )),
        (Role::BranchAdmin, None) => Err(CreateError::Invalid(
            "a branch_admin token needs the region it manages (--region)".into(),
        )),
        _ => Ok(()),
    }
}

/// Creates an admin token and returns it: the only time it is ever shown.
pub async fn create(
    conn: &mut Conn<'_>,
    admin: &Admin,
    now_ms: i64,
) -> Result<String, CreateError> {
    check(&admin.name, admin.role, admin.region.as_deref())?;
    let token = new_secret("lca_")?;
    let inserted = with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO admin_tokens (name, digest, role, region, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&admin.name)
        .bind(secret_digest(&token))
        .bind(admin.role.as_str())
        .bind(&admin.region)
        .bind(now_ms)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if inserted == 0 {
        return Err(CreateError::NameTaken(admin.name.clone()));
    }
    Ok(token)
}

/// The admin `token` belongs to, if any. Tokens are looked up by digest, so the comparison
/// leaks nothing about the stored tokens.
pub async fn find(conn: &mut Conn<'_>, token: &str) -> Result<Option<Admin>, sqlx::Error> {
    let row: Option<(String, String, Option<String>)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT name, role, region FROM admin_tokens WHERE digest = $1")
            .bind(secret_digest(token))
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.and_then(|(name, role, region)| {
        Some(Admin {
            name,
            role: Role::parse(&role)?,
            region,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(role: Role, region: Option<&str>) -> Admin {
        Admin {
            name: "a".into(),
            role,
            region: region.map(str::to_owned),
        }
    }

    #[test]
    fn each_role_reads_and_writes_where_the_table_says() {
        let head = admin(Role::HeadOffice, None);
        let branch = admin(Role::BranchAdmin, Some("cn-fj"));
        let reviewer = admin(Role::Reviewer, None);
        let viewer = admin(Role::Viewer, Some("cn-fj"));
        assert!(head.may_write(Some("cn-gd")).is_ok() && head.may_write(None).is_ok());
        assert!(branch.may_write(Some("cn-fj-xm")).is_ok());
        assert!(branch.may_write(Some("cn-gd")).is_err());
        assert!(branch.may_write(Some("cn")).is_err());
        assert!(branch.may_write(None).is_err());
        assert!(branch.may_read(Some("cn-fj")).is_ok() && branch.may_read(Some("cn-gd")).is_err());
        assert!(
            reviewer.may_read(Some("cn-gd")).is_ok() && reviewer.may_write(Some("cn-gd")).is_err()
        );
        assert!(viewer.may_read(Some("cn-fj-xm")).is_ok());
        assert!(viewer.may_read(Some("cn-gd")).is_err());
        assert!(viewer.may_write(Some("cn-fj")).is_err());
        assert!(head.may_upload().is_ok() && branch.may_upload().is_ok());
        assert!(reviewer.may_upload().is_err() && viewer.may_upload().is_err());
        assert!(head.may_review().is_ok() && reviewer.may_review().is_ok());
        assert!(branch.may_review().is_err() && viewer.may_review().is_err());
    }

    #[test]
    fn roles_and_regions_must_fit_together() {
        assert!(check("ops", Role::HeadOffice, Some("cn")).is_err());
        assert!(check("fj", Role::BranchAdmin, None).is_err());
        assert!(check("fj", Role::BranchAdmin, Some("cn-fj")).is_ok());
        assert!(check("bad name", Role::Viewer, None).is_err());
        assert!(check("v", Role::Viewer, Some("CN")).is_err());
    }
}
