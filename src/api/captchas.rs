//! Captchas for a person (SPEC §13): `GET /api/v1/automation/captchas` lists the pending
//! challenges, `POST /api/v1/automation/captchas/{id}` `{"answer"}` answers one. Admin only:
//! the image and the answer are a login in progress (a metrics token gets 403 here).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::answer::ok;
use super::answer::ErrorBody;
use super::json::Json;
use super::state::AppState;
use crate::error::Error;

/// Longest answer accepted; a captcha is a few characters.
const MAX_ANSWER_CHARS: usize = 256;

/// `GET /captchas`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptchasAnswer {
    pub captchas: Vec<crate::lifecycle::captcha::Challenge>,
}

/// `POST /captchas/{id}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptchaAnswered {
    pub id: String,
    /// Always true.
    pub answered: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptchaAnswer {
    /// What the person read in the image.
    pub answer: String,
}

/// The challenges waiting for a person, oldest first: id, site_name, account, prompt, image
/// (a data URL), created_at, expires_at.
#[utoipa::path(
    get,
    path = "/api/v1/automation/captchas",
    operation_id = "listCaptchas",
    tag = "captchas",
    responses(
        (status = 200, description = "{captchas: [Challenge]}", body = super::answer::Answer<CaptchasAnswer>),
        (status = 403, description = "Not the admin token", body = ErrorBody)
    )
)]
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    ok(CaptchasAnswer {
        captchas: state.broker.captchas().pending(),
    })
}

/// Answers a pending challenge; the login that waits for it goes on.
#[utoipa::path(
    post,
    path = "/api/v1/automation/captchas/{id}",
    operation_id = "answerCaptcha",
    tag = "captchas",
    params(("id" = String, Path, description = "The challenge's id")),
    request_body = CaptchaAnswer,
    responses(
        (status = 200, description = "{id, answered: true}", body = super::answer::Answer<CaptchaAnswered>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown or expired id", body = ErrorBody),
        (status = 409, description = "Already answered", body = ErrorBody)
    )
)]
pub async fn answer(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Json<CaptchaAnswer>,
) -> Result<HttpResponse, Error> {
    let answer = body.answer.trim();
    if answer.is_empty() || answer.chars().count() > MAX_ANSWER_CHARS {
        return Err(Error::invalid(
            "answer",
            format!("must be 1 to {MAX_ANSWER_CHARS} characters"),
        ));
    }
    state.broker.captchas().answer(&id, answer)?;
    Ok(ok(CaptchaAnswered {
        id: id.into_inner(),
        answered: true,
    }))
}
