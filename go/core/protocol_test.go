package core

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The protocol table test. describeTable turns the method table and the event
// list into a description of their JSON shapes; testdata/protocol.json holds
// the description both sides must match. This test checks the Go side
// against it, src/backend/protocol.test.ts the TypeScript side, so a method
// or field that differs between Go and TypeScript fails one of the two.
//
// The description's vocabulary (the same in protocol.ts):
//
//	"string" | "number" | "boolean" | "any"
//	{"array": T} | {"record": T} | {"object": {field: T | {"optional": T}}}
//
// After a deliberate change to the protocol, regenerate the file with
//
//	go test ./core -run TestProtocolTable -update
//
// and make the same change in src/backend/protocol.ts.

var update = flag.Bool("update", false, "rewrite testdata/protocol.json from the Go table")

const tableFile = "testdata/protocol.json"

var rawMessageType = reflect.TypeFor[json.RawMessage]()
var marshalerType = reflect.TypeFor[json.Marshaler]()

// describe returns the JSON shape of values of type t, as encoding/json
// writes them. It refuses what the vocabulary cannot say (a nullable pointer,
// a custom marshaler, a non-string map key) so that such a type cannot slip
// into the protocol undescribed.
func describe(t reflect.Type) (any, error) {
	if t == rawMessageType {
		return "any", nil
	}
	if t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType) {
		return nil, fmt.Errorf("%v has a custom JSON encoding; its shape cannot be described", t)
	}
	switch t.Kind() {
	case reflect.String:
		return "string", nil
	case reflect.Bool:
		return "boolean", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number", nil
	case reflect.Interface:
		return "any", nil
	case reflect.Slice, reflect.Array:
		el, err := describe(t.Elem())
		return map[string]any{"array": el}, err
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("%v: map keys must be strings", t)
		}
		el, err := describe(t.Elem())
		return map[string]any{"record": el}, err
	case reflect.Struct:
		fields := map[string]any{}
		if err := describeFields(t, fields); err != nil {
			return nil, err
		}
		return map[string]any{"object": fields}, nil
	}
	return nil, fmt.Errorf("%v: kind %v is not part of the protocol's vocabulary", t, t.Kind())
}

// describeFields adds t's JSON fields to fields, flattening embedded structs
// as encoding/json does.
func describeFields(t reflect.Type, fields map[string]any) error {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			if err := describeFields(f.Type, fields); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			return fmt.Errorf("%v.%s has no json name: the wire name would be the Go name", t, f.Name)
		}
		omitempty := slices.Contains(strings.Split(opts, ","), "omitempty")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			if !omitempty {
				return fmt.Errorf("%v.%s: a pointer without omitempty can be null, which the protocol does not describe", t, f.Name)
			}
			ft = ft.Elem()
		}
		d, err := describe(ft)
		if err != nil {
			return fmt.Errorf("%v.%s: %w", t, f.Name, err)
		}
		if omitempty {
			d = map[string]any{"optional": d}
		}
		if _, dup := fields[name]; dup {
			return fmt.Errorf("%v: two fields are named %q", t, name)
		}
		fields[name] = d
	}
	return nil
}

// describeTable describes a method table and event list, with the protocol
// version and the error codes.
func describeTable(ms map[string]method, evs []Event) (map[string]any, error) {
	outMethods := map[string]any{}
	for name, m := range ms {
		p, err := describe(m.params)
		if err != nil {
			return nil, fmt.Errorf("method %s params: %w", name, err)
		}
		r, err := describe(m.result)
		if err != nil {
			return nil, fmt.Errorf("method %s result: %w", name, err)
		}
		outMethods[name] = map[string]any{"params": p, "result": r}
	}
	outEvents := map[string]any{}
	for _, ev := range evs {
		d, err := describe(reflect.TypeOf(ev))
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", ev.EventName(), err)
		}
		outEvents[ev.EventName()] = d
	}
	codes := slices.Sorted(slices.Values(errorCodes))
	return map[string]any{"protocol": ProtocolVersion, "methods": outMethods, "events": outEvents, "errors": codes}, nil
}

// normalize round-trips v through JSON, so that a described table and one
// read from the file compare with the same Go types.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffShapes lists where two descriptions differ, one line per difference,
// each with its path ("methods.dial.result.pings: ...").
func diffShapes(path string, want, got any) []string {
	if reflect.DeepEqual(want, got) {
		return nil
	}
	wm, wok := want.(map[string]any)
	gm, gok := got.(map[string]any)
	if !wok || !gok {
		return []string{fmt.Sprintf("%s: file says %s, Go says %s", path, compact(want), compact(got))}
	}
	var out []string
	keys := map[string]bool{}
	for k := range wm {
		keys[k] = true
	}
	for k := range gm {
		keys[k] = true
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		p := k
		if path != "" {
			p = path + "." + k
		}
		w, inW := wm[k]
		g, inG := gm[k]
		switch {
		case !inW:
			out = append(out, fmt.Sprintf("%s: only in Go (%s)", p, compact(g)))
		case !inG:
			out = append(out, fmt.Sprintf("%s: only in the file (%s)", p, compact(w)))
		default:
			out = append(out, diffShapes(p, w, g)...)
		}
	}
	return out
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func goldenTable(t *testing.T) any {
	t.Helper()
	b, err := os.ReadFile(tableFile)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", tableFile, err)
	}
	return v
}

// TestProtocolTable checks the Go table against testdata/protocol.json.
func TestProtocolTable(t *testing.T) {
	table, err := describeTable(methods, events)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		b, _ := json.MarshalIndent(table, "", "  ")
		if err := os.WriteFile(tableFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: now make src/backend/protocol.ts agree with it", tableFile)
		return
	}
	if diffs := diffShapes("", goldenTable(t), normalize(t, table)); len(diffs) > 0 {
		t.Errorf("the Go protocol table differs from %s:\n  %s\nIf the change is meant, run `go test ./core -run TestProtocolTable -update`, make the same change in src/backend/protocol.ts, and bump the protocol version if old hosts would misread it.", tableFile, strings.Join(diffs, "\n  "))
	}
}

// TestProtocolTableDetectsChanges proves the table test can fail: each
// altered table (a field renamed, added, removed or retyped, a method or
// event missing) differs from the file at the altered place.
func TestProtocolTableDetectsChanges(t *testing.T) {
	type dialRenamed struct {
		ConnHandle
		RemoteAddr string `json:"remote"`
		LocalAddr  string `json:"localAddr"`
		DialUs     int64  `json:"dialUs"`
		WarmUpUs   int64  `json:"warmUpUs"`
		Pings      int    `json:"pings"`
	}
	type dialAdded struct {
		DialResult
		Extra bool `json:"extra"`
	}
	type dialRemoved struct {
		ConnHandle
		RemoteAddr string `json:"remoteAddr"`
		LocalAddr  string `json:"localAddr"`
		DialUs     int64  `json:"dialUs"`
		WarmUpUs   int64  `json:"warmUpUs"`
	}
	type dialRetyped struct {
		ConnHandle
		RemoteAddr string `json:"remoteAddr"`
		LocalAddr  string `json:"localAddr"`
		DialUs     int64  `json:"dialUs"`
		WarmUpUs   int64  `json:"warmUpUs"`
		Pings      string `json:"pings"`
	}
	type dialOptional struct {
		ConnHandle
		RemoteAddr string `json:"remoteAddr"`
		LocalAddr  string `json:"localAddr"`
		DialUs     int64  `json:"dialUs"`
		WarmUpUs   int64  `json:"warmUpUs"`
		Pings      int    `json:"pings,omitempty"`
	}
	withDial := func(r reflect.Type) map[string]method {
		ms := maps(methods)
		ms["dial"] = method{params: ms["dial"].params, result: r}
		return ms
	}
	without := func(name string) map[string]method {
		ms := maps(methods)
		delete(ms, name)
		return ms
	}
	golden := goldenTable(t)
	for _, tc := range []struct {
		name   string
		ms     map[string]method
		evs    []Event
		wantAt string
	}{
		{"field renamed", withDial(reflect.TypeFor[dialRenamed]()), events, "methods.dial.result.object.remote"},
		{"field added", withDial(reflect.TypeFor[dialAdded]()), events, "methods.dial.result.object.extra"},
		{"field removed", withDial(reflect.TypeFor[dialRemoved]()), events, "methods.dial.result.object.pings"},
		{"field retyped", withDial(reflect.TypeFor[dialRetyped]()), events, "methods.dial.result.object.pings"},
		{"field made optional", withDial(reflect.TypeFor[dialOptional]()), events, "methods.dial.result.object.pings"},
		{"method missing", without("whois"), events, "methods.whois"},
		{"event missing", methods, events[1:], "events.state"},
	} {
		table, err := describeTable(tc.ms, tc.evs)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		diffs := diffShapes("", golden, normalize(t, table))
		if !slices.ContainsFunc(diffs, func(d string) bool { return strings.HasPrefix(d, tc.wantAt+":") }) {
			t.Errorf("%s: want a difference at %s, got %q", tc.name, tc.wantAt, diffs)
		}
	}
}

func maps(m map[string]method) map[string]method {
	out := make(map[string]method, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestDescribeRefusesWhatItCannotSay: a nullable pointer or a field without a
// json name would put a shape on the wire that the table does not show.
func TestDescribeRefusesWhatItCannotSay(t *testing.T) {
	type nullable struct {
		P *int `json:"p"`
	}
	type unnamed struct {
		X int
	}
	for _, ty := range []reflect.Type{reflect.TypeFor[nullable](), reflect.TypeFor[unnamed](), reflect.TypeFor[map[int]string](), reflect.TypeFor[chan int]()} {
		if _, err := describe(ty); err == nil {
			t.Errorf("describe(%v) succeeded", ty)
		}
	}
}

// TestPublishedTableHasNoTestHooks: the methods only test builds have are
// not in the protocol table, so the published addon cannot answer them.
func TestPublishedTableHasNoTestHooks(t *testing.T) {
	for name := range methods {
		if strings.Contains(strings.ToLower(name), "test") {
			t.Errorf("method %q is in the published table", name)
		}
	}
	if _, ok := methods["panicTest"]; ok {
		t.Error("panicTest is in the published table")
	}
}

// TestResponsesMatchTable calls, through Call, every method that works
// without a tailnet and checks each answer against the table: no null where
// the table says array, no field it lacks, none missing.
func TestResponsesMatchTable(t *testing.T) {
	col := newCollector()
	c := New(col.sink, noBridge{})
	table := normalize(t, must(describeTable(methods, events))).(map[string]any)
	dir := t.TempDir()
	calls := []struct{ method, params string }{
		{"hello", ``},
		{"configure", `{"env":{},"maxProcs":0}`},
		{"create", fmt.Sprintf(`{"config":{"dir":%q,"hostname":"x","controlUrl":"http://127.0.0.1:1","authKey":"","ephemeral":false,"tags":[],"verbose":false}}`, dir)},
		{"status", `{"node":1}`},
		{"handles", `{}`},
		{"close", `{"node":1}`},
	}
	for i, tc := range calls {
		id := int64(i + 1)
		c.Call(id, tc.method, []byte(tc.params))
		r := col.response(t, id)
		if r.Error != nil {
			t.Fatalf("%s: %v", tc.method, r.Error)
		}
		shape := table["methods"].(map[string]any)[tc.method].(map[string]any)["result"]
		if err := conforms(shape, normalize(t, r.Result)); err != nil {
			t.Errorf("%s answered %s, which does not match the table: %v", tc.method, r.Result, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// conforms checks a decoded JSON value against a shape.
func conforms(shape, v any) error {
	switch s := shape.(type) {
	case string:
		ok := map[string]bool{"string": isA[string](v), "number": isA[float64](v), "boolean": isA[bool](v), "any": true}[s]
		if !ok {
			return fmt.Errorf("%s is not a %s", compact(v), s)
		}
		return nil
	case map[string]any:
		if el, ok := s["array"]; ok {
			arr, ok := v.([]any)
			if !ok {
				return fmt.Errorf("%s is not an array", compact(v))
			}
			for _, e := range arr {
				if err := conforms(el, e); err != nil {
					return err
				}
			}
			return nil
		}
		if el, ok := s["record"]; ok {
			obj, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s is not an object", compact(v))
			}
			for _, e := range obj {
				if err := conforms(el, e); err != nil {
					return err
				}
			}
			return nil
		}
		fields := s["object"].(map[string]any)
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s is not an object", compact(v))
		}
		for k := range obj {
			if _, ok := fields[k]; !ok {
				return fmt.Errorf("field %q is not in the table", k)
			}
		}
		for k, fs := range fields {
			fv, present := obj[k]
			if o, ok := optional(fs); ok {
				if present {
					if err := conforms(o, fv); err != nil {
						return fmt.Errorf("%s: %w", k, err)
					}
				}
				continue
			}
			if !present {
				return fmt.Errorf("field %q is missing", k)
			}
			if err := conforms(fs, fv); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	}
	return fmt.Errorf("bad shape %s", compact(shape))
}

func optional(shape any) (any, bool) {
	m, ok := shape.(map[string]any)
	if !ok {
		return nil, false
	}
	o, ok := m["optional"]
	return o, ok
}

func isA[T any](v any) bool { _, ok := v.(T); return ok }
