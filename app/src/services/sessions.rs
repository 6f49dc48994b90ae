//! Session listings: a user's live sessions with their devices and active platforms, and every
//! user's.

use ratatoskr_core::{Handle, SessionManager, SessionSummary};
use serde::Serialize;

use crate::db::Db;
use crate::domain::device::{self, Device, DeviceClass};
use crate::domain::platform::{ActiveRef, PlatformId, PlatformType};
use crate::domain::time::Timestamp;
use crate::domain::user::{User, UserId};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::platforms::ACTIVE_ATTR;

/// One session as the "your sessions" page, the API and the CLI show it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    /// Public handle.
    pub handle: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last used.
    pub last_seen: Timestamp,
    /// When it ends if unused.
    pub idle_expires_at: Timestamp,
    /// When it ends regardless.
    pub absolute_expires_at: Timestamp,
    /// The User-Agent at login.
    pub user_agent: Option<String>,
    /// The address at login.
    pub ip: Option<String>,
    /// "Firefox on Linux".
    pub device: String,
    /// What kind of device.
    pub device_class: DeviceClass,
    /// The active platform's type, if any.
    pub platform_type: Option<PlatformType>,
    /// Whether it is the session making the request.
    pub current: bool,
}

/// What session listings need: the session manager and the database.
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    /// Session policy over the session store.
    pub manager: &'a SessionManager,
    /// The application database.
    pub db: &'a Db,
}

impl Sessions<'_> {
    /// A user's live sessions with their devices, oldest first; `current` is marked.
    pub async fn of(
        &self,
        user: UserId,
        current: Option<Handle>,
    ) -> ServiceResult<Vec<SessionView>> {
        let list = self.manager.list_user(&user.session_user_id()).await?;
        // Platforms that can still be active: a session naming another one shows none (it drops
        // the reference itself at its next request).
        let usable: Vec<PlatformId> = if list.is_empty() {
            Vec::new()
        } else {
            self.db
                .platforms(user)
                .await?
                .into_iter()
                .filter(|p| p.active)
                .map(|p| p.id)
                .collect()
        };
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            out.push(self.view(s, current, &usable).await?);
        }
        Ok(out)
    }

    async fn view(
        &self,
        s: SessionSummary,
        current: Option<Handle>,
        usable: &[PlatformId],
    ) -> Result<SessionView, ServiceError> {
        // The attributes ride with the session (through rotations) and end with it.
        let record = self.manager.store().load(&s.key).await?;
        let attr = |name: &str| record.as_ref().and_then(|r| r.attrs.get(name));
        let device: Option<Device> =
            attr(device::ATTR).and_then(|v| serde_json::from_slice(v).ok());
        let active: Option<ActiveRef> = attr(ACTIVE_ATTR)
            .and_then(|v| serde_json::from_slice::<ActiveRef>(v).ok())
            .filter(|a| usable.contains(&a.id));
        Ok(SessionView {
            handle: s.handle.to_string(),
            created_at: Timestamp::from_millis(s.meta.created_at),
            last_seen: Timestamp::from_millis(s.last_seen),
            idle_expires_at: Timestamp::from_millis(s.meta.idle_deadline(s.last_seen)),
            absolute_expires_at: Timestamp::from_millis(s.meta.absolute_deadline),
            user_agent: device.as_ref().map(|d| d.user_agent.clone()),
            ip: device.as_ref().map(|d| d.ip.clone()),
            device: device
                .as_ref()
                .map_or_else(|| "Unknown client".into(), Device::label),
            device_class: device.as_ref().map_or(DeviceClass::Unknown, |d| d.class),
            platform_type: active.map(|a| a.platform_type),
            current: current == Some(s.handle),
        })
    }

    /// Every user with their live sessions (users in name order, at most `max_users`),
    /// reporting progress as `(users done, users total)`.
    pub async fn all(
        &self,
        max_users: i64,
        mut progress: impl FnMut(i64, i64),
    ) -> ServiceResult<Vec<(User, Vec<SessionView>)>> {
        let total = self.db.count_users().await?.min(max_users);
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < total {
            let page = self.db.users(offset, 200.min(total - offset)).await?;
            if page.is_empty() {
                break;
            }
            for u in page {
                let sessions = self.of(u.id, None).await?;
                out.push((u, sessions));
                offset += 1;
                progress(offset, total);
            }
        }
        Ok(out)
    }
}

/// Parse a handle from a path; unknown shapes are simply not found.
pub fn parse_handle(raw: &str) -> ServiceResult<Handle> {
    Handle::parse(raw).ok_or(ServiceError::NotFound("session"))
}
