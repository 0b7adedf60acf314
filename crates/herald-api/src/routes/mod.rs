//! Handlers, one module per resource, and the lookups they share.
//!
//! Scoping rule, the same on every tenant-scoped route: a tenant token naming another
//! tenant in the path gets 403 (Outpost's answer) before anything is looked up; a tenant
//! that does not exist is a 404; a destination, event or attempt of another tenant is a 404
//! (its existence is not revealed).

pub mod api_keys;
pub mod attempts;
pub mod destinations;
pub mod events;
pub mod health;
pub mod metrics;
pub mod operator_events;
pub mod publish;
pub mod replay;
pub mod schemas;
pub mod tenants;
pub mod test_event;
pub mod webhook_templates;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use herald_core::{Destination, TenantSummary};
use herald_store::{EventQuery, PageRequest, StoredEvent};
use serde::de::DeserializeOwned;

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Path parameters, with extraction failures answered in the contract's error shape.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Params(v))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
    }
}

/// The tenant named in a path, after checking the caller may see it.
pub(crate) async fn tenant_scope(
    state: &SharedState,
    caller: &Caller,
    tenant_id: &str,
) -> Result<TenantSummary, ApiError> {
    caller.check_tenant(tenant_id)?;
    state
        .engine
        .store()
        .get_tenant(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// An event by id, in tenant `scope` or, with `None` (an admin naming no tenant), in whichever
/// tenant has it. Event ids are unique per tenant only: without a scope, an id that several
/// tenants use is a 400 asking for `tenant_id`. 404 when there is none.
pub(crate) async fn find_event(
    state: &SharedState,
    scope: Option<&str>,
    id: &str,
) -> Result<StoredEvent, ApiError> {
    let store = state.engine.store();
    if let Some(tenant_id) = scope {
        return store
            .get_event(tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("event"));
    }
    let q = EventQuery {
        ids: vec![id.to_string()],
        page: PageRequest {
            limit: 2,
            ..PageRequest::default()
        },
        ..EventQuery::default()
    };
    let mut found = store.list_events(&q).await?.models;
    match found.len() {
        0 => Err(ApiError::not_found("event")),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::invalid(
            "tenant_id",
            format!("event id {id:?} is used by more than one tenant; name the tenant"),
        )),
    }
}

/// A destination of a tenant, 404 when it does not exist.
pub(crate) async fn load_destination(
    state: &SharedState,
    tenant_id: &str,
    id: &str,
) -> Result<Destination, ApiError> {
    state
        .engine
        .store()
        .get_destination(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("destination"))
}
