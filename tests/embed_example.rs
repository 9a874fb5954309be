//! Runs `examples/embed.rs` as a test: the example is compiled in as a module, so this checks
//! the very code the example runs.

#[allow(dead_code)] // the example's `main` is not called here
#[path = "../examples/embed.rs"]
mod embed;

use ai_rate_limiter::domain::MessageStatus;

#[tokio::test]
async fn embed_example_runs_every_message_to_success() {
    let done = embed::run().await.expect("the example succeeds");
    assert_eq!(done.len(), embed::PROMPTS.len());
    for (message, prompt) in done.iter().zip(embed::PROMPTS) {
        assert_eq!(message.status, MessageStatus::Success, "{message:?}");
        assert_eq!(message.request.prompt, prompt);
        let result = message.result.as_ref().expect("a success has a result");
        assert_eq!(result.text, format!("echo: {prompt}"));
        assert_eq!(result.model, "mock-echo");
        assert_eq!(message.attempts, 1);
        assert!(message.completed_at.is_some());
    }
}
