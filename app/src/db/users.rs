//! `app_users`: accounts and their password hashes.

use crate::domain::time::Timestamp;
use crate::domain::user::{User, UserId, UserName};

use super::pool::{Db, Inserted, inserted, q, qa};

type UserRow = (i64, String, i64, i64, i64);

fn user(r: UserRow) -> User {
    User {
        id: UserId(r.0),
        username: UserName::from_stored(r.1),
        is_admin: r.2 != 0,
        disabled: r.3 != 0,
        created_at: Timestamp::from_millis(r.4),
    }
}

const USER_COLS: &str = "id, username, is_admin, disabled, created_at";

impl Db {
    /// Create a user.
    pub async fn create_user(
        &self,
        username: &UserName,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<Inserted<User>, sqlx::Error> {
        let sql = format!(
            "INSERT INTO app_users (username, password_hash, is_admin, disabled, created_at)
             VALUES ($1, $2, $3, 0, $4) RETURNING {USER_COLS}"
        );
        inserted(
            qa!(
                self,
                fetch_one,
                UserRow,
                &sql,
                username.as_str(),
                password_hash,
                i64::from(is_admin),
                Timestamp::now().as_millis()
            )
            .map(user),
        )
    }

    /// A user by login name, as typed (folded like [`UserName::parse`]; a name that cannot be
    /// one finds nobody).
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, sqlx::Error> {
        let Ok(name) = UserName::parse(username) else {
            return Ok(None);
        };
        let sql = format!("SELECT {USER_COLS} FROM app_users WHERE username = $1");
        Ok(qa!(self, fetch_optional, UserRow, &sql, name.as_str())?.map(user))
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLS} FROM app_users WHERE id = $1");
        Ok(qa!(self, fetch_optional, UserRow, &sql, id.0)?.map(user))
    }

    /// A user with their password hash, for login.
    pub async fn credentials(
        &self,
        username: &UserName,
    ) -> Result<Option<(User, String)>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLS}, password_hash FROM app_users WHERE username = $1");
        Ok(qa!(
            self,
            fetch_optional,
            (i64, String, i64, i64, i64, String),
            &sql,
            username.as_str()
        )?
        .map(|r| (user((r.0, r.1, r.2, r.3, r.4)), r.5)))
    }

    /// The password hash of a user.
    pub async fn password_hash(&self, id: UserId) -> Result<Option<String>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_optional,
            (String,),
            "SELECT password_hash FROM app_users WHERE id = $1",
            id.0
        )?
        .map(|r| r.0))
    }

    /// Replace a user's password hash.
    pub async fn set_password(&self, id: UserId, hash: &str) -> Result<bool, sqlx::Error> {
        Ok(q!(
            self,
            execute,
            "UPDATE app_users SET password_hash = $1 WHERE id = $2",
            hash,
            id.0
        )? == 1)
    }

    /// Disable or enable a user.
    pub async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<bool, sqlx::Error> {
        Ok(q!(
            self,
            execute,
            "UPDATE app_users SET disabled = $1 WHERE id = $2",
            i64::from(disabled),
            id.0
        )? == 1)
    }

    /// Users in name order, `limit` from `offset`.
    pub async fn users(&self, offset: i64, limit: i64) -> Result<Vec<User>, sqlx::Error> {
        let sql = format!("SELECT {USER_COLS} FROM app_users ORDER BY username LIMIT $1 OFFSET $2");
        Ok(qa!(self, fetch_all, UserRow, &sql, limit, offset)?
            .into_iter()
            .map(user)
            .collect())
    }

    /// How many users there are.
    pub async fn count_users(&self) -> Result<i64, sqlx::Error> {
        Ok(qa!(self, fetch_one, (i64,), "SELECT count(*) FROM app_users")?.0)
    }
}
