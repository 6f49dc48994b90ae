//! `app_platforms`: users' platform connections, with their sealed tokens.

use crate::domain::platform::{NewPlatform, Platform, PlatformId, PlatformType};
use crate::domain::time::Timestamp;
use crate::domain::urls::InstanceUrl;
use crate::domain::user::UserId;

use super::pool::{Db, Inserted, inserted, q, qa};

type PlatformRow = (i64, String, String, String, String, i64, i64);

/// A row as a platform; a type this build does not know (written by a newer one) is skipped.
fn platform(r: PlatformRow) -> Option<Platform> {
    Some(Platform {
        id: PlatformId(r.0),
        platform_type: PlatformType::parse(&r.1).ok()?,
        name: r.2,
        instance_url: InstanceUrl::from_stored(r.3),
        username: r.4,
        active: r.5 != 0,
        created_at: Timestamp::from_millis(r.6),
    })
}

const PLATFORM_COLS: &str = "id, platform_type, name, instance_url, username, active, created_at";

impl Db {
    /// Add a platform connection.
    pub async fn create_platform(
        &self,
        user_id: UserId,
        p: &NewPlatform,
        token_sealed: Vec<u8>,
    ) -> Result<Inserted<Platform>, sqlx::Error> {
        let sql = format!(
            "INSERT INTO app_platforms
               (user_id, platform_type, name, instance_url, username, token_sealed, active, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) RETURNING {PLATFORM_COLS}"
        );
        let row = qa!(
            self,
            fetch_one,
            PlatformRow,
            &sql,
            user_id.0,
            p.platform_type.as_str(),
            p.name.as_str(),
            p.instance_url.as_str(),
            p.username.as_str(),
            token_sealed,
            Timestamp::now().as_millis()
        );
        Ok(match inserted(row)? {
            Inserted::Ok(r) => match platform(r) {
                Some(p) => Inserted::Ok(p),
                None => return Err(sqlx::Error::RowNotFound),
            },
            Inserted::Duplicate => Inserted::Duplicate,
        })
    }

    /// A user's platform connections, oldest first.
    pub async fn platforms(&self, user_id: UserId) -> Result<Vec<Platform>, sqlx::Error> {
        let sql =
            format!("SELECT {PLATFORM_COLS} FROM app_platforms WHERE user_id = $1 ORDER BY id");
        Ok(qa!(self, fetch_all, PlatformRow, &sql, user_id.0)?
            .into_iter()
            .filter_map(platform)
            .collect())
    }

    /// How many platform connections a user has.
    pub async fn count_platforms(&self, user_id: UserId) -> Result<i64, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_one,
            (i64,),
            "SELECT count(*) FROM app_platforms WHERE user_id = $1",
            user_id.0
        )?
        .0)
    }

    /// One of the user's platform connections (`None` when it is not theirs or not there).
    pub async fn platform(
        &self,
        user_id: UserId,
        id: PlatformId,
    ) -> Result<Option<Platform>, sqlx::Error> {
        let sql =
            format!("SELECT {PLATFORM_COLS} FROM app_platforms WHERE user_id = $1 AND id = $2");
        Ok(qa!(self, fetch_optional, PlatformRow, &sql, user_id.0, id.0)?.and_then(platform))
    }

    /// The sealed token of one of the user's platforms.
    pub async fn platform_token(
        &self,
        user_id: UserId,
        id: PlatformId,
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_optional,
            (Vec<u8>,),
            "SELECT token_sealed FROM app_platforms WHERE user_id = $1 AND id = $2",
            user_id.0,
            id.0
        )?
        .map(|r| r.0))
    }

    /// Remove one of the user's platforms; whether it was there.
    pub async fn delete_platform(
        &self,
        user_id: UserId,
        id: PlatformId,
    ) -> Result<bool, sqlx::Error> {
        Ok(q!(
            self,
            execute,
            "DELETE FROM app_platforms WHERE user_id = $1 AND id = $2",
            user_id.0,
            id.0
        )? == 1)
    }

    /// Mark one of the user's platforms active or inactive; whether it was there.
    pub async fn set_platform_active(
        &self,
        user_id: UserId,
        id: PlatformId,
        active: bool,
    ) -> Result<bool, sqlx::Error> {
        Ok(q!(
            self,
            execute,
            "UPDATE app_platforms SET active = $1 WHERE user_id = $2 AND id = $3",
            i64::from(active),
            user_id.0,
            id.0
        )? == 1)
    }

    /// Platform connections by type, over every user.
    pub async fn platforms_by_type(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        qa!(
            self,
            fetch_all,
            (String, i64),
            "SELECT platform_type, count(*) FROM app_platforms GROUP BY platform_type ORDER BY platform_type"
        )
    }

    /// How many platform connections exist.
    pub async fn count_all_platforms(&self) -> Result<i64, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_one,
            (i64,),
            "SELECT count(*) FROM app_platforms"
        )?
        .0)
    }
}
