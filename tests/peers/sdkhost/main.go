// Copyright the amikey authors. Licensed under the project's licence (see LICENSE at the
// repository root).

// amikey-sdkhost drives a Packer plugin binary with packer-plugin-sdk's own RPC client, the code
// Packer core runs on its side of the plugin protocol, doing around it what Packer core does:
//
//   - runs `<plugin> describe` and reads protocol_version;
//   - starts the plugin with PACKER_PLUGIN_MAGIC_COOKIE and PACKER_PLUGIN_MIN_PORT/MAX_PORT in its
//     environment, as `start post-processor --protobuf NAME` when describe says "v2" and
//     PACKER_FORCE_GOB is unset, empty or "0", else as `start post-processor NAME`
//     (likewise `start datasource ...`);
//   - reads the 4-field handshake line, dials, rpc.NewClient(conn), sets UseProto;
//   - PostProcessor(): ConfigSpec (decoded by the SDK), Configure with the values
//     hcldec.Decode makes of an HCL body against that spec (as Packer's hcl2template does),
//     PostProcess with the SDK's MockArtifact and BasicUi, Cancel through the context;
//   - Datasource(): ConfigSpec, OutputSpec, Configure, Execute (decoded by the SDK: cty msgpack
//     under protobuf, go-cty's gob otherwise).
//
// It prints one JSON object with what the SDK decoded. The Rust tests (tests/it/sdkhost.rs)
// drive it; it is built by tests/peers/build.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	pluginsdk "github.com/hashicorp/packer-plugin-sdk/plugin"
	sdkrpc "github.com/hashicorp/packer-plugin-sdk/rpc"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

const usage = `amikey-sdkhost: drive a Packer plugin with packer-plugin-sdk's RPC client.

  amikey-sdkhost describe --plugin BIN
  amikey-sdkhost pp --plugin BIN --hcl FILE [--gob] [--name NAME] [--builder-id ID]
                    [--artifact-id REGION:AMI,...] [--cancel-on TEXT]
  amikey-sdkhost ds --plugin BIN --hcl FILE [--gob] [--name NAME]

--hcl FILE holds the body of the block (its attributes). --gob sets PACKER_FORCE_GOB=1 for the
run, as a user of Packer 1.12+ would. --cancel-on cancels PostProcess's context (which makes
the SDK call PostProcessor.Cancel) when a Ui line contains TEXT. Prints one JSON object.
`

// result is what the host prints.
type result struct {
	Describe     map[string]interface{} `json:"describe"`
	Protocol     string                 `json:"protocol"`
	Args         []string               `json:"args"`
	Handshake    string                 `json:"handshake"`
	ConfigSpec   []attr                 `json:"config_spec,omitempty"`
	ConfigureErr *string                `json:"configure_error"`
	PostProcess  *ppResult              `json:"post_process,omitempty"`
	OutputSpec   []attr                 `json:"output_spec,omitempty"`
	Execute      *execResult            `json:"execute,omitempty"`
	UiOut        string                 `json:"ui_out"`
	UiErr        string                 `json:"ui_err"`
	PluginExit   string                 `json:"plugin_exit"`
	PluginStderr string                 `json:"plugin_stderr"`
	HostError    string                 `json:"host_error,omitempty"`
}

// attr is one entry of a decoded spec: an attribute (Type set), or a repeated block
// (hcldec.BlockListSpec, Block set to its nested attributes).
type attr struct {
	Name     string          `json:"name"`
	Type     json.RawMessage `json:"type,omitempty"`
	Required bool            `json:"required"`
	Block    []attr          `json:"block,omitempty"`
}

type ppResult struct {
	Error         *string                `json:"error"`
	Keep          bool                   `json:"keep"`
	ForceOverride bool                   `json:"force_override"`
	Artifact      map[string]interface{} `json:"artifact"`
	Cancelled     bool                   `json:"cancelled"`
}

type execResult struct {
	Error *string         `json:"error"`
	Value json.RawMessage `json:"value"`
	Type  json.RawMessage `json:"type"`
	// Conforms: the value's type is the object type the OutputSpec implies (what Packer
	// type-checks data.TYPE.NAME.ATTR references against).
	Conforms bool `json:"conforms"`
}

// lockedBuffer is an io.Writer safe for the Ui's concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// on is called with the text written so far after each write.
	on func(string)
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	n, err := b.buf.Write(p)
	text := b.buf.String()
	on := b.on
	b.mu.Unlock()
	if on != nil {
		on(text)
	}
	return n, err
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	plugin := fs.String("plugin", "", "plugin binary")
	hclFile := fs.String("hcl", "", "HCL body of the block")
	gob := fs.Bool("gob", false, "set PACKER_FORCE_GOB=1")
	name := fs.String("name", "", "component name (default: the first one describe lists)")
	builderID := fs.String("builder-id", "mitchellh.amazonebs", "input artifact BuilderId")
	artifactID := fs.String("artifact-id", "", "input artifact Id (region:ami,...)")
	cancelOn := fs.String("cancel-on", "", "cancel PostProcess when a Ui line contains this")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after this long")
	if err := fs.Parse(os.Args[2:]); err != nil || *plugin == "" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if *gob {
		os.Setenv("PACKER_FORCE_GOB", "1")
	}
	res := &result{}
	err := run(res, mode, *plugin, *hclFile, *name, *builderID, *artifactID, *cancelOn, *timeout)
	if err != nil {
		res.HostError = err.Error()
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	if err != nil {
		os.Exit(1)
	}
}

// describe runs `<plugin> describe` without the cookie, as Packer does.
func describe(plugin string) (map[string]interface{}, error) {
	cmd := exec.Command(plugin, "describe")
	cmd.Env = withoutCookie(os.Environ())
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s describe: %w", plugin, err)
	}
	var d map[string]interface{}
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("%s describe printed %q: %w", plugin, out, err)
	}
	return d, nil
}

func withoutCookie(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, pluginsdk.MagicCookieKey+"=") {
			out = append(out, e)
		}
	}
	return out
}

// useProtobuf is modern core's rule: the plugin says protocol_version "v2" and PACKER_FORCE_GOB
// is unset, empty or "0".
func useProtobuf(d map[string]interface{}) bool {
	force := os.Getenv("PACKER_FORCE_GOB")
	return d["protocol_version"] == "v2" && (force == "" || force == "0")
}

// started is a running plugin and the SDK client connected to it.
type started struct {
	cmd    *exec.Cmd
	client *sdkrpc.Client
	stderr *lockedBuffer
	exit   chan error
}

func start(res *result, plugin, kind, name string, proto bool) (*started, error) {
	args := []string{"start", kind}
	if proto {
		args = append(args, "--protobuf")
	}
	args = append(args, name)
	res.Args = args
	cmd := exec.Command(plugin, args...)
	cmd.Env = append(withoutCookie(os.Environ()),
		fmt.Sprintf("%s=%s", pluginsdk.MagicCookieKey, pluginsdk.MagicCookieValue),
		"PACKER_PLUGIN_MIN_PORT=10000",
		"PACKER_PLUGIN_MAX_PORT=25000",
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &started{cmd: cmd, stderr: stderr, exit: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		lines <- line
		// Anything more on stdout is pollution; keep it for the report.
		rest, _ := io.ReadAll(r)
		if len(rest) > 0 {
			stderr.Write([]byte("STDOUT AFTER HANDSHAKE: " + string(rest)))
		}
		s.exit <- cmd.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("no handshake line within 30 s")
	}
	line = strings.TrimSpace(line)
	res.Handshake = line
	// Packer's rule (packer/plugin_client.go): 4 fields, major 5, minor <= 0 (as strings).
	parts := strings.SplitN(line, "|", 4)
	if len(parts) != 4 {
		cmd.Process.Kill()
		return nil, fmt.Errorf("handshake %q: want 4 fields (APIMajor|APIMinor|network|address)", line)
	}
	if parts[0] != "5" || parts[1] > "0" {
		cmd.Process.Kill()
		return nil, fmt.Errorf("handshake %q: incompatible API version %s.%s", line, parts[0], parts[1])
	}
	var addr net.Addr
	switch parts[2] {
	case "unix":
		addr, err = net.ResolveUnixAddr("unix", parts[3])
	case "tcp":
		addr, err = net.ResolveTCPAddr("tcp", parts[3])
	default:
		err = fmt.Errorf("unknown network %q", parts[2])
	}
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	conn, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetKeepAlive(true)
	}
	client, err := sdkrpc.NewClient(conn)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	client.UseProto = proto
	s.client = client
	return s, nil
}

// stop closes the session and waits for the plugin to exit on its own.
func (s *started) stop(res *result) {
	s.client.Close()
	select {
	case err := <-s.exit:
		if err != nil {
			res.PluginExit = err.Error()
		} else {
			res.PluginExit = "ok"
		}
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		res.PluginExit = "did not exit within 10 s of the session closing; killed"
	}
	res.PluginStderr = s.stderr.String()
}

func specAttrs(spec hcldec.ObjectSpec) ([]attr, error) {
	var out []attr
	for k, v := range spec {
		switch a := v.(type) {
		case *hcldec.AttrSpec:
			if a.Name != k {
				return nil, fmt.Errorf("spec key %q names attribute %q", k, a.Name)
			}
			t, err := ctyjson.MarshalType(a.Type)
			if err != nil {
				return nil, err
			}
			out = append(out, attr{Name: a.Name, Type: t, Required: a.Required})
		case *hcldec.BlockListSpec:
			if a.TypeName != k {
				return nil, fmt.Errorf("spec key %q names block %q", k, a.TypeName)
			}
			var nested hcldec.ObjectSpec
			switch n := a.Nested.(type) {
			case hcldec.ObjectSpec:
				nested = n
			case *hcldec.ObjectSpec:
				nested = *n
			default:
				return nil, fmt.Errorf("block %q nests a %T, not an hcldec.ObjectSpec", k, a.Nested)
			}
			inner, err := specAttrs(nested)
			if err != nil {
				return nil, fmt.Errorf("block %q: %w", k, err)
			}
			out = append(out, attr{Name: k, Block: inner})
		default:
			return nil, fmt.Errorf("spec %q is a %T, neither an *hcldec.AttrSpec nor an *hcldec.BlockListSpec", k, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// decodeBody is what Packer's hcl2template does with a block: hcldec.Decode against the spec.
func decodeBody(file string, spec hcldec.ObjectSpec) (cty.Value, error) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCLFile(file)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	v, diags := hcldec.Decode(f.Body, spec, &hcl.EvalContext{})
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return v, nil
}

func errText(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}

func run(res *result, mode, plugin, hclFile, name, builderID, artifactID, cancelOn string, timeout time.Duration) (err error) {
	d, err := describe(plugin)
	if err != nil {
		return err
	}
	res.Describe = d
	proto := useProtobuf(d)
	res.Protocol = "gob"
	if proto {
		res.Protocol = "protobuf"
	}
	// The SDK's client panics where Packer core does (a ConfigSpec it cannot decode): report it.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the SDK client: %v", r)
		}
	}()
	switch mode {
	case "describe":
		return nil
	case "pp":
		if name == "" {
			name = firstName(d, "post_processors")
		}
		return runPostProcessor(res, plugin, name, proto, hclFile, builderID, artifactID, cancelOn, timeout)
	case "ds":
		if name == "" {
			name = firstName(d, "datasources")
		}
		return runDatasource(res, plugin, name, proto, hclFile, timeout)
	}
	return fmt.Errorf("unknown mode %q\n%s", mode, usage)
}

func firstName(d map[string]interface{}, key string) string {
	if l, ok := d[key].([]interface{}); ok && len(l) > 0 {
		if s, ok := l[0].(string); ok {
			return s
		}
	}
	return ""
}

func runPostProcessor(res *result, plugin, name string, proto bool, hclFile, builderID, artifactID, cancelOn string, timeout time.Duration) error {
	s, err := start(res, plugin, "post-processor", name, proto)
	if err != nil {
		return err
	}
	defer s.stop(res)
	pp := s.client.PostProcessor()
	spec := pp.ConfigSpec()
	if res.ConfigSpec, err = specAttrs(spec); err != nil {
		return err
	}
	if hclFile == "" {
		return nil
	}
	value, err := decodeBody(hclFile, spec)
	if err != nil {
		return err
	}
	buildVars := map[string]string{"packer_build_name": "sdkhost", "packer_builder_type": "amazon-ebs"}
	if err := pp.Configure(buildVars, value); err != nil {
		res.ConfigureErr = errText(err)
		return nil
	}
	if artifactID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cancelled := false
	var once sync.Once
	uiOut := &lockedBuffer{}
	uiErr := &lockedBuffer{}
	if cancelOn != "" {
		uiOut.on = func(text string) {
			if strings.Contains(text, cancelOn) {
				once.Do(func() { cancelled = true; cancel() })
			}
		}
	}
	ui := &packer.BasicUi{Reader: strings.NewReader(""), Writer: uiOut, ErrorWriter: uiErr}
	input := &packer.MockArtifact{
		BuilderIdValue: builderID,
		IdValue:        artifactID,
		StringValue:    "AMIs were created",
		StateValues:    map[string]interface{}{"generated_data": map[string]interface{}{"ID": "sdkhost"}},
	}
	artifact, keep, force, err := pp.PostProcess(ctx, ui, input)
	res.UiOut, res.UiErr = uiOut.String(), uiErr.String()
	r := &ppResult{Error: errText(err), Keep: keep, ForceOverride: force, Cancelled: cancelled}
	if artifact != nil {
		r.Artifact = map[string]interface{}{
			"builder_id":     artifact.BuilderId(),
			"id":             artifact.Id(),
			"string":         artifact.String(),
			"files":          artifact.Files(),
			"generated_data": jsonable(artifact.State("generated_data")),
		}
	}
	res.PostProcess = r
	return nil
}

// jsonable turns what the msgpack codec decoded (maps keyed by interface{}) into JSON values.
func jsonable(v interface{}) interface{} {
	switch x := v.(type) {
	case map[interface{}]interface{}:
		m := map[string]interface{}{}
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]interface{}:
		m := map[string]interface{}{}
		for k, e := range x {
			m[k] = jsonable(e)
		}
		return m
	case []interface{}:
		out := make([]interface{}, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case []byte:
		return string(x)
	}
	return v
}

func runDatasource(res *result, plugin, name string, proto bool, hclFile string, timeout time.Duration) error {
	s, err := start(res, plugin, "datasource", name, proto)
	if err != nil {
		return err
	}
	defer s.stop(res)
	ds := s.client.Datasource()
	spec := ds.ConfigSpec()
	if res.ConfigSpec, err = specAttrs(spec); err != nil {
		return err
	}
	outSpec := ds.OutputSpec()
	if res.OutputSpec, err = specAttrs(outSpec); err != nil {
		return err
	}
	if hclFile == "" {
		return nil
	}
	value, err := decodeBody(hclFile, spec)
	if err != nil {
		return err
	}
	if err := ds.Configure(value); err != nil {
		res.ConfigureErr = errText(err)
		return nil
	}
	done := make(chan struct{})
	var out cty.Value
	var execErr error
	go func() {
		out, execErr = ds.Execute()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		return fmt.Errorf("Execute did not answer within %s", timeout)
	}
	r := &execResult{Error: errText(execErr)}
	if execErr == nil {
		ty := out.Type()
		if r.Value, err = ctyjson.Marshal(out, ty); err != nil {
			return err
		}
		if r.Type, err = ctyjson.MarshalType(ty); err != nil {
			return err
		}
		r.Conforms = ty.Equals(hcldec.ImpliedType(outSpec))
	}
	res.Execute = r
	return nil
}
