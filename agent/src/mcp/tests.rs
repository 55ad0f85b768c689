//! Tests of the MCP decoder, from captures in tests/fixtures/mcp.
