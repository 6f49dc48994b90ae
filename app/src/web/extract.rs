//! Extractors: the logged-in user for the API (401 JSON) and for pages (redirect to
//! `/login`), administrators (403), and JSON bodies and path parameters whose rejections keep
//! the JSON error shape.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use ratatoskr_axum::Session;
use serde::de::DeserializeOwned;

use crate::domain::device::Device;
use crate::domain::user::User;
use crate::services::error::ServiceError;
use crate::web::error::{AppError, PageError};
use crate::web::state::AppState;

/// A logged-in, enabled user and their session.
#[derive(Clone)]
pub struct CurrentUser {
    /// The user's row.
    pub user: User,
    /// The request's session.
    pub session: Session,
}

/// Load the session's user; a session whose user is gone or disabled is ended.
async fn current_user(parts: &mut Parts, state: &AppState) -> Result<CurrentUser, AppError> {
    let session = Session::from_request_parts(parts, state).await?;
    let user = state.accounts().session_user(&session).await?;
    Ok(CurrentUser { user, session })
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(u) = parts.extensions.get::<CurrentUser>() {
            return Ok(u.clone());
        }
        let u = current_user(parts, state).await?;
        parts.extensions.insert(u.clone());
        Ok(u)
    }
}

/// A logged-in administrator (403 `forbidden` for other users).
#[derive(Clone)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let u = CurrentUser::from_request_parts(parts, state).await?;
        if u.user.is_admin {
            Ok(Admin(u))
        } else {
            Err(ServiceError::Forbidden.into())
        }
    }
}

/// [`CurrentUser`] for pages: anonymous visitors are sent to `/login`.
#[derive(Clone)]
pub struct PageUser(pub CurrentUser);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        Ok(PageUser(
            CurrentUser::from_request_parts(parts, state).await?,
        ))
    }
}

/// [`Admin`] for pages.
#[derive(Clone)]
pub struct PageAdmin(pub CurrentUser);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        Ok(PageAdmin(Admin::from_request_parts(parts, state).await?.0))
    }
}

/// A JSON body; malformed, mistyped or oversized bodies are JSON errors too.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> AppError {
    match r {
        JsonRejection::MissingJsonContentType(_) => AppError::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(e) => {
            AppError::request(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
        }
        JsonRejection::JsonSyntaxError(_) => AppError::request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not valid JSON",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than this server accepts",
        ),
        other => AppError::request(other.status(), "invalid_body", other.body_text()),
    }
}

/// A path parameter; one that does not parse names nothing here, so 404.
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParam(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ServiceError::NotFound("resource").into())
            }
            Err(e) => Err(ServiceError::Internal(anyhow::anyhow!("path extraction: {e}")).into()),
        }
    }
}

/// A query string; one that does not parse is a 400 in the JSON shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(AppError::request(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                e.body_text(),
            )),
        }
    }
}

/// A urlencoded form for pages; a malformed one is a 400 page.
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for FormBody<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(FormBody(v)),
            Err(e) => Err(PageError(AppError::request(
                e.status(),
                "invalid_form",
                "the form was incomplete or malformed",
            ))),
        }
    }
}

/// The client's address: the one [`crate::web::client_addr`] determined (the peer, or the
/// client a trusted proxy forwards), else the TCP peer's (when the server was started with
/// connect info).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let client = parts
            .extensions
            .get::<ratatoskr_axum::ClientIp>()
            .map(|c| c.0);
        Ok(ClientAddr(client.or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
        })))
    }
}

/// The device of a request: its User-Agent, seen from the client's address.
pub struct RequestDevice(pub Device);

impl<S: Send + Sync> FromRequestParts<S> for RequestDevice {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let ua = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(RequestDevice(Device::classify(
            ua,
            addr.map(|a| a.to_string()).unwrap_or_default(),
        )))
    }
}
