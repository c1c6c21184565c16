//! The Anthropic pages ringway answers itself: the model list in Anthropic's shape and
//! the local token count. (The Messages API is not served yet.)

use crate::harness::*;

#[test]
fn anthropic_model_list_and_token_count() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let list = client.get("/olla/anthropic/v1/models").json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"llama3.2:latest"), "{list}");
    assert_eq!(list["data"][0]["type"], "model");
    assert_eq!(list["has_more"], false);
    assert_eq!(list["first_id"], ids[0]);
    assert_eq!(list["last_id"], ids[ids.len() - 1]);

    let body = r#"{"model":"llama3.2:latest","system":"Be brief.","messages":[{"role":"user","content":"Count the tokens of this sentence, please."}]}"#;
    for path in [
        "/olla/anthropic/v1/messages/count_tokens",
        "/v1/messages/count_tokens",
    ] {
        let r = client.post_json(
            path,
            body,
            "x-api-key: anything\r\nanthropic-version: 2023-06-01\r\n",
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let n = r.json()["input_tokens"].as_u64().unwrap();
        assert!((5..100).contains(&n), "{n}");
    }
    let r = client.post_json("/v1/messages/count_tokens", "{not json", "");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(a.stats().requests(), 0, "answered without the endpoint");
}
