//! The identifiers identity providers know users by (`user_name`, `email`), and the provisioner
//! role that identity providers act through.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_user_carries_its_user_name_and_email_and_a_taken_user_name_is_a_conflict_in_any_case() {
    let app = TestApp::new().await;
    let body = json!({"external_id": "okta|1", "user_name": "Ada@Example.com", "email": "ada@example.com",
                      "permissions": ["mail:read"]});
    let user = app.post("/v1/users", &app.admin, body).await.ok().clone();
    assert_eq!(user["user_name"], "Ada@Example.com");
    assert_eq!(user["email"], "ada@example.com");
    assert!(user["ended_at"].is_null());
    let again = json!({"external_id": "okta|2", "user_name": "ada@EXAMPLE.com", "permissions": []});
    let taken = app.post("/v1/users", &app.admin, again).await.problem(409, "conflict");
    assert!(taken.contains("user_name"), "{taken}");
    let plain = app.post("/v1/users", &app.admin, json!({"external_id": "okta|3", "permissions": []})).await;
    assert!(plain.ok()["user_name"].is_null(), "both stay optional through tether's own API");
}

#[tokio::test]
async fn a_provisioner_is_minted_by_an_admin_and_reads_no_tenant_data() {
    let app = TestApp::new().await;
    let provisioner = app.provisioner().await;
    app.get("/v1/users", &provisioner).await.problem(403, "forbidden");
    app.post("/v1/credentials", &provisioner, json!({"role": "provisioner"})).await.problem(403, "forbidden");
    let keys = app.get("/v1/keys", &provisioner).await;
    assert!(keys.ok()["keys"].is_array(), "the public keys are any credential's");
    let listed = app.get("/v1/credentials", &app.admin).await.ok().clone();
    let roles: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|c| c["role"].as_str().unwrap()).collect();
    assert!(roles.contains(&"provisioner"), "{roles:?}");
}
