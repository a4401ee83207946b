//! Hostile plugin proving the **outbound** limits: action `flood` with `{"url": "..."}` sends
//! `GET url` again and again until a request fails, then answers how many succeeded and why
//! the next one failed. Against a fast server that proves `outbound.requests_per_call_max`;
//! against a slow one, `outbound.wait_ms_max` (the call's total wait). Action `header` with
//! `{"url", "name", "value"}` sends `GET url` with that header and answers the response's text
//! (`{"text": ...}`) or the refusal (`{"refused": code}`): proves that a plugin cannot set the
//! headers the host owns (`Host` would reach another site than the allow-list checked).

use lifecircle_sdk::outbound::HttpRequest;
use lifecircle_sdk::{Request, Response, Scenario, ScenarioError};
use serde::{Deserialize, Serialize};

struct HostileOutbound;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FloodBody {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderBody {
    url: String,
    name: String,
    value: String,
}

#[derive(Serialize)]
struct FloodAnswer {
    answered: u32,
    stopped_by: &'static str,
}

impl Scenario for HostileOutbound {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => {
                let FloodBody { url } = request.json()?;
                let mut answered = 0;
                loop {
                    match HttpRequest::get(&url).send() {
                        Ok(_) => answered += 1,
                        Err(error) => {
                            return Response::json(&FloodAnswer {
                                answered,
                                stopped_by: error.code(),
                            });
                        }
                    }
                }
            }
            "header" => {
                let HeaderBody { url, name, value } = request.json()?;
                match HttpRequest::get(&url).header(&name, &value).send() {
                    Ok(response) => Response::json(&serde_json::json!({"text": response.text()})),
                    Err(error) => Response::json(&serde_json::json!({"refused": error.code()})),
                }
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileOutbound);
