//! Attribute access: raw bytes, JSON values, typed [`SessionValue`]s, and "remember me".
//! Changes are collected here and written by [`persist`](super::persist) after the handler.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CookieAction, Session};
use crate::error::SessionError;

/// The attribute that marks a session as "remember me" (persistent cookie).
pub const REMEMBER_ATTR: &str = "ratatoskr.remember";

/// A typed session value with a fixed attribute name, for context extractors:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct ActivePlatform { id: i64, name: String }
/// impl ratatoskr_axum::SessionValue for ActivePlatform {
///     const KEY: &'static str = "active_platform";
/// }
/// ```
pub trait SessionValue: Serialize + DeserializeOwned + Send + Sync {
    /// The attribute name the value lives under.
    const KEY: &'static str;
}

impl Session {
    /// An attribute's raw bytes (JSON, when written by this crate).
    pub async fn get_raw(&self, name: &str) -> Result<Option<Vec<u8>>, SessionError> {
        let st = self.loaded().await?;
        if let Some(change) = st.changes.get(name) {
            return Ok(change.clone());
        }
        Ok(st
            .live
            .as_ref()
            .and_then(|l| l.record.attrs.get(name).cloned()))
    }

    /// Set an attribute's raw bytes. Setting the value it already has changes nothing.
    pub async fn insert_raw(&self, name: &str, value: Vec<u8>) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        let stored = st.live.as_ref().and_then(|l| l.record.attrs.get(name));
        if stored == Some(&value) {
            st.changes.remove(name);
        } else {
            st.changes.insert(name.to_owned(), Some(value));
        }
        Ok(())
    }

    /// Remove an attribute. Removing one that is not there changes nothing.
    pub async fn remove(&self, name: &str) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        let stored = st
            .live
            .as_ref()
            .is_some_and(|l| l.record.attrs.contains_key(name));
        if stored {
            st.changes.insert(name.to_owned(), None);
        } else {
            st.changes.remove(name);
        }
        Ok(())
    }

    /// An attribute, deserialized from JSON.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        // Deserialized from the bytes where they are (a pending change, else the loaded
        // record), under the state's lock: no copy of the attribute per read.
        let st = self.loaded().await?;
        let bytes = match st.changes.get(name) {
            Some(change) => change.as_deref(),
            None => st
                .live
                .as_ref()
                .and_then(|l| l.record.attrs.get(name).map(Vec::as_slice)),
        };
        bytes
            .map(|b| serde_json::from_slice(b).map_err(SessionError::Value))
            .transpose()
    }

    /// Set an attribute to `value` serialized as JSON.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let bytes = serde_json::to_vec(value).map_err(SessionError::Value)?;
        self.insert_raw(name, bytes).await
    }

    /// A [`SessionValue`] by its own key.
    pub async fn get_value<T: SessionValue>(&self) -> Result<Option<T>, SessionError> {
        self.get(T::KEY).await
    }

    /// Set a [`SessionValue`] under its own key.
    pub async fn set_value<T: SessionValue>(&self, value: &T) -> Result<(), SessionError> {
        self.insert(T::KEY, value).await
    }

    /// Remove a [`SessionValue`].
    pub async fn remove_value<T: SessionValue>(&self) -> Result<(), SessionError> {
        self.remove(T::KEY).await
    }

    /// Keep the cookie beyond the browser session (up to the absolute deadline), or not.
    pub async fn set_remember_me(&self, remember: bool) -> Result<(), SessionError> {
        if remember {
            self.insert_raw(REMEMBER_ATTR, b"true".to_vec()).await?;
        } else {
            self.remove(REMEMBER_ATTR).await?;
        }
        // An existing session's cookie is sent again with its new lifetime. Without a session
        // there is nothing to re-send: remembering makes a pending change, and the session it
        // creates at the end of the request sets its cookie anyway.
        let mut st = self.0.state.lock().await;
        if st.live.is_some() {
            st.cookie = CookieAction::Set;
        }
        Ok(())
    }
}
