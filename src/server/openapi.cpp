// The OpenAPI document of server/openapi.h: request bodies as the server parses them (request.cpp).
#include "server/openapi.h"

namespace tandem::server {

const std::string& openapi_json() {
  static const std::string doc = R"JSON({
  "openapi": "3.0.3",
  "info": {"title": "tandem serve", "version": "1", "description": "OpenAI- and llama-server-compatible API"},
  "paths": {
    "/health": {"get": {"summary": "200 once the model is loaded, 503 before", "responses": {"200": {"description": "ok"}, "503": {"description": "loading"}}}},
    "/v1/models": {"get": {"summary": "the served model", "responses": {"200": {"description": "a list of one model"}}}},
    "/props": {"get": {"summary": "server settings", "responses": {"200": {"description": "settings"}}}},
    "/slots": {"get": {"summary": "slot states", "responses": {"200": {"description": "a list of slots"}}}},
    "/metrics": {"get": {"summary": "Prometheus text format 0.0.4: tandem_* figures and llama-server's llamacpp:* names",
      "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "501": {"description": "the server was started without --metrics"}}}},
    "/monitor/stats": {"get": {"summary": "the live figures of /monitor and tandem top: tokens/s, requests, KV use, per-device memory and weight-read bandwidth against the measured limit, CPU shares (/proc/stat), GPUs (NVML; null without a driver), hints",
      "responses": {"200": {"description": "figures", "content": {"application/json": {"schema": {"type": "object",
        "required": ["tokens_per_s", "requests", "kv", "bandwidth", "devices", "cpu", "gpu", "lines", "hints"]}}}}}}},
    "/monitor": {"get": {"summary": "the live monitor page (charts polling /monitor/stats)",
      "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/": {"get": {"summary": "the chat page (streams /v1/chat/completions)",
      "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/v1/chat/completions": {"post": {"summary": "chat completion (OpenAI)",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}}},
      "responses": {"200": {"description": "a completion or an event stream"}, "400": {"description": "bad request"}, "503": {"description": "busy"}}}},
    "/v1/completions": {"post": {"summary": "text completion (OpenAI)",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}}},
      "responses": {"200": {"description": "a completion or an event stream"}, "400": {"description": "bad request"}, "503": {"description": "busy"}}}},
    "/completion": {"post": {"summary": "text completion (llama-server)",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NativeRequest"}}}},
      "responses": {"200": {"description": "a completion or an event stream"}, "400": {"description": "bad request"}, "503": {"description": "busy"}}}},
    "/tokenize": {"post": {"summary": "token ids of a text",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["content"],
        "properties": {"content": {"type": "string"}, "add_special": {"type": "boolean"}, "with_pieces": {"type": "boolean"}}}}}},
      "responses": {"200": {"description": "tokens"}, "400": {"description": "bad request"}}}},
    "/detokenize": {"post": {"summary": "text of token ids",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["tokens"],
        "properties": {"tokens": {"type": "array", "items": {"type": "integer"}}}}}}},
      "responses": {"200": {"description": "content"}, "400": {"description": "bad request"}}}},
    "/apply-template": {"post": {"summary": "the chat template applied to messages",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}}},
      "responses": {"200": {"description": "prompt"}, "400": {"description": "bad request"}}}}
  },
  "components": {"schemas": {
    "Message": {"type": "object", "required": ["role", "content"], "properties": {
      "role": {"type": "string", "enum": ["system", "user", "assistant"]},
      "content": {"type": "string", "maxLength": 200}}},
    "Sampling": {"type": "object", "properties": {
      "temperature": {"type": "number"}, "top_p": {"type": "number"}, "top_k": {"type": "integer"},
      "min_p": {"type": "number"}, "seed": {"type": "integer"}, "presence_penalty": {"type": "number"},
      "frequency_penalty": {"type": "number"},
      "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
      "stream": {"type": "boolean"}}},
    "ChatRequest": {"allOf": [{"$ref": "#/components/schemas/Sampling"}, {"type": "object", "required": ["messages"], "properties": {
      "model": {"type": "string"},
      "messages": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"$ref": "#/components/schemas/Message"}},
      "max_tokens": {"type": "integer", "maximum": 8}, "max_completion_tokens": {"type": "integer", "maximum": 8},
      "n": {"type": "integer"}, "logprobs": {"type": "boolean"}, "top_logprobs": {"type": "integer"},
      "tools": {"type": "array", "maxItems": 2, "items": {"type": "object"}},
      "tool_choice": {"oneOf": [{"type": "string", "enum": ["auto", "none", "required"]}, {"type": "object"}]},
      "parallel_tool_calls": {"type": "boolean"}, "chat_template_kwargs": {"type": "object"}}}]},
    "CompletionRequest": {"allOf": [{"$ref": "#/components/schemas/Sampling"}, {"type": "object", "required": ["prompt"], "properties": {
      "model": {"type": "string"},
      "prompt": {"oneOf": [{"type": "string", "maxLength": 200}, {"type": "array", "maxItems": 16, "items": {"oneOf": [
        {"type": "integer"}, {"type": "string", "maxLength": 50}, {"type": "array", "maxItems": 8}]}}]},
      "max_tokens": {"type": "integer", "maximum": 8}, "n": {"type": "integer"}, "echo": {"type": "boolean"},
      "logprobs": {"type": "integer"}}}]},
    "NativeRequest": {"allOf": [{"$ref": "#/components/schemas/Sampling"}, {"type": "object", "required": ["prompt"], "properties": {
      "prompt": {"oneOf": [{"type": "string", "maxLength": 200}, {"type": "array", "maxItems": 16, "items": {"type": "integer"}}]},
      "n_predict": {"type": "integer", "maximum": 8}, "n_probs": {"type": "integer"}, "cache_prompt": {"type": "boolean"},
      "id_slot": {"type": "integer"}, "return_tokens": {"type": "boolean"}}}]}
  }}
})JSON";
  return doc;
}

}  // namespace tandem::server
