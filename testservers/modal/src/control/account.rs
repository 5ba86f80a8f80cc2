//! `AuthTokenGet`, `AppGetOrCreate` and `SecretGetOrCreate`.

use std::sync::Arc;

use ken_core::Secret;
use tonic::Status;

use super::invalid;
use crate::checks::Call;
use crate::ids::{issue_jwt, new_id};
use crate::inspect::AppRecord;
use crate::state::State;
use ken_provider_modal::proto::modal_client::{
    AppGetOrCreateRequest, AppGetOrCreateResponse, AuthTokenGetRequest, AuthTokenGetResponse,
    ObjectCreationType, SecretGetOrCreateRequest, SecretGetOrCreateResponse,
};

pub(super) async fn auth_token_get(
    state: Arc<State>,
    _call: Call,
    _request: AuthTokenGetRequest,
) -> Result<AuthTokenGetResponse, Status> {
    let ttl = state.lock().auth_token_ttl;
    Ok(AuthTokenGetResponse {
        token: issue_jwt(&state.jwt_key, "auth", ttl),
    })
}

pub(super) async fn app_get_or_create(
    state: Arc<State>,
    call: Call,
    request: AppGetOrCreateRequest,
) -> Result<AppGetOrCreateResponse, Status> {
    let environment = state.environment(&request.environment_name)?;
    let creation = ObjectCreationType::try_from(request.object_creation_type).map_err(|_| {
        invalid(
            &state,
            &call.method,
            format!("unknown object_creation_type {}", request.object_creation_type),
        )
    })?;
    let ephemeral = creation == ObjectCreationType::Ephemeral;
    if request.app_name.is_empty() && !ephemeral {
        return Err(invalid(&state, &call.method, "app_name is required"));
    }

    let mut inner = state.lock();
    if !ephemeral {
        let existing = inner
            .apps
            .values()
            .find(|app| app.name == request.app_name && app.environment == environment && !app.ephemeral);
        if let Some(app) = existing {
            return Ok(AppGetOrCreateResponse {
                app_id: app.id.clone(),
            });
        }
        if creation == ObjectCreationType::Unspecified {
            return Err(Status::not_found(format!(
                "App '{}' not found in environment '{environment}'",
                request.app_name
            )));
        }
    }
    let id = new_id("ap");
    tracing::info!(app.id = %id, app.name = %request.app_name, "app created");
    inner.apps.insert(
        id.clone(),
        AppRecord {
            id: id.clone(),
            name: request.app_name,
            environment,
            ephemeral,
        },
    );
    Ok(AppGetOrCreateResponse { app_id: id })
}

pub(super) async fn secret_get_or_create(
    state: Arc<State>,
    call: Call,
    request: SecretGetOrCreateRequest,
) -> Result<SecretGetOrCreateResponse, Status> {
    state.environment(&request.environment_name)?;
    if request.object_creation_type != ObjectCreationType::Ephemeral as i32 {
        return Err(invalid(
            &state,
            &call.method,
            format!(
                "the test server supports only ephemeral secrets (object_creation_type {}), got {}",
                ObjectCreationType::Ephemeral as i32,
                request.object_creation_type
            ),
        ));
    }
    for key in request.env_dict.keys() {
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                &state,
                &call.method,
                format!("secret key {key:?} is not a valid environment variable name"),
            ));
        }
    }
    let id = new_id("st");
    let env = request
        .env_dict
        .into_iter()
        .map(|(key, value)| (key, Secret::new(value)))
        .collect();
    state.lock().secrets.insert(id.clone(), env);
    Ok(SecretGetOrCreateResponse { secret_id: id })
}
