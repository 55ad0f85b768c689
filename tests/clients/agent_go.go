// A real tool-using agent loop in Go, with the standard library only
// (net/http over crypto/tls), against the OpenAI chat completions endpoint.
//
//	agent_go --base-url https://127.0.0.1:PORT --ca ca.pem \
//	         --file /path/to/file --command 'ls -l /tmp' [--stream]
//
// The API key comes from $OPENAI_API_KEY (never from argv). The transport
// offers HTTP/2 and HTTP/1.1 by ALPN (ForceAttemptHTTP2, as a custom
// TLSClientConfig otherwise turns HTTP/2 off), so the protocol is the one the
// server picks: mock_llm.py speaks HTTP/1.1 only, mock_h2.js HTTP/2 only.
// Go's transport asks for gzip itself and decodes it. --stream parses the SSE
// stream (chat.completion.chunk deltas, tool call fragments, the usage chunk,
// data: [DONE]). The tools are real: read_file uses os.ReadFile, run_command
// runs `/bin/sh -c`. Prints `PROTO <proto>` for each reply on stderr and
// `FINAL: <text>` on stdout; exit 0 on a final answer, 1 otherwise.
//
// The e2e tests build it twice with Debian's golang: as is, and stripped
// (`-ldflags=-s -w`: no symbol table, only .gopclntab).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

const systemPrompt = "You are the aitrail test agent. Use the tools you are given."
const maxTurns = 8

type function struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type toolCall struct {
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Function function `json:"function"`
}

type message struct {
	Role       string     `json:"role"`
	Content    *string    `json:"content"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

type reply struct {
	Choices []struct {
		Message      message `json:"message"`
		FinishReason string  `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type chunk struct {
	Choices []struct {
		Delta struct {
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func tools() []any {
	return []any{
		map[string]any{"type": "function", "function": map[string]any{
			"name": "read_file", "description": "Read a text file and return its content.",
			"parameters": map[string]any{"type": "object",
				"properties": map[string]any{"path": map[string]any{"type": "string", "description": "absolute path"}},
				"required":   []string{"path"}},
		}},
		map[string]any{"type": "function", "function": map[string]any{
			"name": "run_command", "description": "Run a shell command and return its output.",
			"parameters": map[string]any{"type": "object",
				"properties": map[string]any{"command": map[string]any{"type": "string"}},
				"required":   []string{"command"}},
		}},
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[agent_go] "+format+"\n", a...)
}

func runTool(name, argsText string) string {
	var args map[string]string
	if argsText == "" {
		argsText = "{}"
	}
	if err := json.Unmarshal([]byte(argsText), &args); err != nil {
		return "error: bad arguments: " + err.Error()
	}
	switch name {
	case "read_file":
		b, err := os.ReadFile(args["path"])
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	case "run_command":
		cmd := exec.Command("/bin/sh", "-c", args["command"])
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return "error: " + err.Error()
		}
		s := fmt.Sprintf("exit_code=%d\n%s", code, out.String())
		if errb.Len() > 0 {
			s += "\n[stderr]\n" + errb.String()
		}
		return s
	}
	return "unknown tool " + name
}

// readStream consumes an SSE stream into one reply.
func readStream(body io.Reader) (*reply, error) {
	type slot struct{ id, name, args string }
	calls := map[int]*slot{}
	var text strings.Builder
	var finish string
	var u *usage
	done := false
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if !strings.HasPrefix(line, "data:") {
			continue
		}
		data := strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		if data == "[DONE]" {
			done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return nil, fmt.Errorf("bad chunk: %w", err)
		}
		if c.Usage != nil {
			u = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
			for _, tc := range ch.Delta.ToolCalls {
				s, ok := calls[tc.Index]
				if !ok {
					s = &slot{}
					calls[tc.Index] = s
				}
				if tc.ID != "" {
					s.id = tc.ID
				}
				s.name += tc.Function.Name
				s.args += tc.Function.Arguments
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !done {
		return nil, errors.New("stream ended without data: [DONE]")
	}
	r := &reply{Usage: u}
	r.Choices = make([]struct {
		Message      message `json:"message"`
		FinishReason string  `json:"finish_reason"`
	}, 1)
	r.Choices[0].FinishReason = finish
	r.Choices[0].Message.Role = "assistant"
	if text.Len() > 0 {
		t := text.String()
		r.Choices[0].Message.Content = &t
	}
	keys := make([]int, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		s := calls[k]
		r.Choices[0].Message.ToolCalls = append(r.Choices[0].Message.ToolCalls,
			toolCall{ID: s.id, Type: "function", Function: function{Name: s.name, Arguments: s.args}})
	}
	return r, nil
}

func post(client *http.Client, url, key string, payload map[string]any, stream bool) (*reply, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("User-Agent", "aitrail-test-agent-go/1.0")
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	logf("PROTO %s", resp.Proto)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if stream {
		return readStream(resp.Body)
	}
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("bad JSON reply: %w", err)
	}
	return &r, nil
}

func run() error {
	baseURL := flag.String("base-url", "", "https://127.0.0.1:PORT")
	ca := flag.String("ca", os.Getenv("SSL_CERT_FILE"), "CA certificate (PEM)")
	file := flag.String("file", "", "the file read_file is asked to read")
	command := flag.String("command", "", "the command run_command is asked to run")
	model := flag.String("model", "gpt-4o-mini", "model")
	stream := flag.Bool("stream", false, "stream the replies (SSE)")
	flag.Parse()
	if *baseURL == "" || *file == "" || *command == "" {
		return errors.New("--base-url, --file and --command are required")
	}
	key := os.Getenv("OPENAI_API_KEY")
	if key == "" {
		return errors.New("OPENAI_API_KEY is not set")
	}
	pool := x509.NewCertPool()
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", *ca)
		}
	}
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		MaxIdleConns:      1,
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	defer transport.CloseIdleConnections()

	url := strings.TrimRight(*baseURL, "/") + "/v1/chat/completions"
	sys := systemPrompt
	user := fmt.Sprintf("Read the file, then run the command, then say done.\nFILE: %s\nCMD: %s\n", *file, *command)
	messages := []message{{Role: "system", Content: &sys}, {Role: "user", Content: &user}}
	for turn := 0; turn < maxTurns; turn++ {
		payload := map[string]any{"model": *model, "messages": messages, "tools": tools()}
		if *stream {
			payload["stream"] = true
			payload["stream_options"] = map[string]any{"include_usage": true}
		}
		r, err := post(client, url, key, payload, *stream)
		if err != nil {
			return err
		}
		if len(r.Choices) == 0 {
			return errors.New("reply without choices")
		}
		if r.Usage == nil {
			return errors.New("reply without usage")
		}
		choice := r.Choices[0]
		calls := choice.Message.ToolCalls
		names := make([]string, len(calls))
		for i, c := range calls {
			names[i] = c.Function.Name
		}
		logf("turn %d: finish=%s usage=%d/%d tool_calls=%v", turn, choice.FinishReason,
			r.Usage.PromptTokens, r.Usage.CompletionTokens, names)
		if len(calls) == 0 {
			content := ""
			if choice.Message.Content != nil {
				content = *choice.Message.Content
			}
			fmt.Printf("FINAL: %s\n", content)
			return nil
		}
		messages = append(messages, message{Role: "assistant", Content: choice.Message.Content, ToolCalls: calls})
		for _, c := range calls {
			result := runTool(c.Function.Name, c.Function.Arguments)
			logf("tool %s -> %d chars", c.Function.Name, len(result))
			res := result
			messages = append(messages, message{Role: "tool", ToolCallID: c.ID, Content: &res})
		}
	}
	fmt.Println("FINAL: <no final answer>")
	return errors.New("no final answer")
}

func main() {
	if err := run(); err != nil {
		logf("error: %v", err)
		os.Exit(1)
	}
}
