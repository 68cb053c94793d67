//! Accounts and sites under manual control (SPEC §11): `GET /api/v1/automation/accounts`,
//! `POST /api/v1/automation/accounts/unblock`, `POST /api/v1/automation/sites/{site}/circuit/close`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::json::Json;
use super::state::AppState;
use crate::accounts::{validate_account_name, AccountView};
use crate::config::validate_site_name;
use crate::error::Error;
use crate::policy::circuit::CircuitView;

/// `GET /accounts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountsAnswer {
    pub accounts: Vec<AccountView>,
    /// For a derived site (SPEC §13): the site whose accounts these are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts_of_site: Option<String>,
}

/// `POST /accounts/unblock`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnblockAnswer {
    pub site_name: String,
    pub account: String,
    /// Whether a blacklist or cooldown was lifted.
    pub was_blocked: bool,
}

/// `POST /sites/{site}/circuit/close`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CircuitAnswer {
    pub site_name: String,
    pub circuit: CircuitView,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Only this site's accounts.
    pub site_name: Option<String>,
}

/// Every account (or one site's) with its state: `active`, `blacklisted` or `cooling_down`
/// with `until` and `reason`, or `inactive`. Never a password.
#[utoipa::path(
    get,
    path = "/api/v1/automation/accounts",
    tag = "accounts",
    params(AccountsQuery),
    responses(
        (status = 200, description = "{accounts: [AccountView]}", body = super::answer::Answer<AccountsAnswer>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site", body = ErrorBody)
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<AccountsQuery>,
) -> Result<HttpResponse, Error> {
    if let Some(site) = &query.site_name {
        validate_site_name("site_name", site)?;
    }
    let accounts = state
        .broker
        .account_views(query.site_name.as_deref())
        .await?;
    // A derived site uses its parent's accounts, and says so.
    let accounts_of_site = query
        .site_name
        .as_deref()
        .and_then(|name| state.broker.accounts_site(name));
    Ok(ok(AccountsAnswer {
        accounts,
        accounts_of_site,
    }))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockRequest {
    pub site_name: String,
    pub account: String,
}

/// Lifts an account's blacklist or cooldown at once.
#[utoipa::path(
    post,
    path = "/api/v1/automation/accounts/unblock",
    tag = "accounts",
    request_body = UnblockRequest,
    responses(
        (status = 200, description = "{site_name, account, was_blocked}", body = super::answer::Answer<UnblockAnswer>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site or account", body = ErrorBody)
    )
)]
pub async fn unblock(
    state: web::Data<AppState>,
    body: Json<UnblockRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    validate_site_name("site_name", &request.site_name)?;
    validate_account_name("account", &request.account)?;
    let was_blocked = state
        .broker
        .unblock(&request.site_name, &request.account)
        .await?;
    Ok(ok(UnblockAnswer {
        site_name: request.site_name,
        account: request.account,
        was_blocked,
    }))
}

/// Closes a site's circuit: logins are tried again at once.
#[utoipa::path(
    post,
    path = "/api/v1/automation/sites/{site}/circuit/close",
    tag = "accounts",
    params(("site" = String, Path, description = "The site name")),
    responses(
        (status = 200, description = "{site_name, circuit: {state, failures, retry_at}}", body = super::answer::Answer<CircuitAnswer>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site", body = ErrorBody)
    )
)]
pub async fn close_circuit(
    state: web::Data<AppState>,
    site: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let site = site.into_inner();
    validate_site_name("site", &site)?;
    let circuit = state.broker.close_circuit(&site).await?;
    Ok(ok(CircuitAnswer {
        site_name: site,
        circuit,
    }))
}
