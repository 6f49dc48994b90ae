//! Platform connections: adding one (validated, its token sealed), the session's active one,
//! switching, removing and (de)activating.

use ratatoskr_axum::Session;
use serde::Deserialize;

use crate::db::{Db, Inserted};
use crate::domain::platform::{
    ActiveRef, NewPlatform, Platform, PlatformId, PlatformType, account, check_access_token,
    display_name,
};
use crate::domain::urls::InstanceUrl;
use crate::domain::user::UserId;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::tokens::{TokenCipher, token_aad};

/// Most platform connections per user.
pub const MAX_PLATFORMS: i64 = 20;
/// The session attribute naming the active platform.
pub const ACTIVE_ATTR: &str = "app.active_platform";

/// A new platform connection as submitted (JSON or form).
#[derive(Deserialize)]
pub struct PlatformInput {
    /// `pixelfed` or `mastodon`.
    pub platform_type: String,
    /// Display name.
    pub name: String,
    /// `https://…`.
    pub instance_url: String,
    /// Account name.
    pub username: String,
    /// Access token (sealed before it is stored; never returned).
    pub access_token: String,
}

impl PlatformInput {
    /// The validated connection (the token is checked, not kept).
    pub fn validate(&self) -> ServiceResult<NewPlatform> {
        let new = NewPlatform {
            platform_type: PlatformType::parse(&self.platform_type)?,
            name: display_name(&self.name)?,
            instance_url: InstanceUrl::parse(&self.instance_url)?,
            username: account(&self.username)?,
        };
        check_access_token(&self.access_token)?;
        Ok(new)
    }
}

/// What platform operations need: the database and the token cipher.
#[derive(Clone, Copy)]
pub struct Platforms<'a> {
    /// The application database.
    pub db: &'a Db,
    /// Seals and opens tokens.
    pub cipher: &'a TokenCipher,
}

impl Platforms<'_> {
    /// Validate, seal and store a platform connection of `user`.
    pub async fn add(&self, user: UserId, input: &PlatformInput) -> ServiceResult<Platform> {
        let new = input.validate()?;
        if self.db.count_platforms(user).await? >= MAX_PLATFORMS {
            return Err(ServiceError::TooManyPlatforms(MAX_PLATFORMS));
        }
        let aad = token_aad(user, new.platform_type, &new.instance_url, &new.username);
        let sealed = self.cipher.seal(&input.access_token, &aad);
        match self.db.create_platform(user, &new, sealed).await? {
            Inserted::Ok(p) => Ok(p),
            Inserted::Duplicate => Err(ServiceError::PlatformExists),
        }
    }

    /// The user's connections, oldest first.
    pub async fn list(&self, user: UserId) -> ServiceResult<Vec<Platform>> {
        Ok(self.db.platforms(user).await?)
    }

    /// One of the user's connections, or [`ServiceError::NotFound`].
    pub async fn get(&self, user: UserId, id: PlatformId) -> ServiceResult<Platform> {
        self.db
            .platform(user, id)
            .await?
            .ok_or(ServiceError::NotFound("platform"))
    }

    /// The session's active platform, checked against the database: a platform that was
    /// removed or deactivated (from any session) is cleared from this session here.
    pub async fn active(&self, user: UserId, session: &Session) -> ServiceResult<Option<Platform>> {
        let Some(active) = session.get::<ActiveRef>(ACTIVE_ATTR).await? else {
            return Ok(None);
        };
        match self.db.platform(user, active.id).await? {
            Some(p) if p.active => Ok(Some(p)),
            _ => {
                session.remove(ACTIVE_ATTR).await?;
                Ok(None)
            }
        }
    }

    /// Make one of the user's platforms the session's active one: not found if it is not
    /// theirs; refused if it is inactive or its token no longer opens (sealed under another key).
    pub async fn switch(
        &self,
        user: UserId,
        session: &Session,
        id: PlatformId,
    ) -> ServiceResult<Platform> {
        let p = self.get(user, id).await?;
        if !p.active {
            return Err(ServiceError::PlatformInactive);
        }
        let sealed = self
            .db
            .platform_token(user, id)
            .await?
            .ok_or(ServiceError::NotFound("platform"))?;
        let aad = token_aad(user, p.platform_type, &p.instance_url, &p.username);
        // The token is opened only to check that it still can be; it is dropped at once.
        if self.cipher.open(&sealed, &aad).is_none() {
            return Err(ServiceError::PlatformTokenUnreadable);
        }
        let active = ActiveRef {
            id: p.id,
            platform_type: p.platform_type,
        };
        session.insert(ACTIVE_ATTR, &active).await?;
        metrics::counter!("ratatoskr_app_platform_switches_total").increment(1);
        Ok(p)
    }

    /// Remove one of the user's platforms. `session`'s reference to it goes at once; other
    /// sessions drop theirs when they next read it.
    pub async fn delete(
        &self,
        user: UserId,
        session: &Session,
        id: PlatformId,
    ) -> ServiceResult<()> {
        if !self.db.delete_platform(user, id).await? {
            return Err(ServiceError::NotFound("platform"));
        }
        self.active(user, session).await?;
        Ok(())
    }

    /// Activate or deactivate one of the user's platforms; returns it as it is now.
    pub async fn set_active(
        &self,
        user: UserId,
        session: &Session,
        id: PlatformId,
        active: bool,
    ) -> ServiceResult<Platform> {
        if !self.db.set_platform_active(user, id, active).await? {
            return Err(ServiceError::NotFound("platform"));
        }
        let p = self.get(user, id).await?;
        self.active(user, session).await?;
        Ok(p)
    }
}
