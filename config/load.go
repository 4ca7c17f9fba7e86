package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable tether reads as
// configuration. TETHER_CONFIG (the file to load) is read by the CLI, not
// here.
const EnvPrefix = "TETHER_"

// KeyError is a problem with one configuration key. Key is the key's path
// as a user writes it in --set (log.level, listeners.tcp.framing.type).
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

func keyErr(key, format string, args ...any) *KeyError {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Load builds a node's configuration from four layers, each overriding the
// one before: the defaults; the YAML file at path (skipped when path is
// empty); the TETHER_* entries of env (KEY=value pairs as os.Environ gives
// them, e.g. TETHER_LOG_LEVEL=debug or TETHER_LISTENERS_TCP_ADDRESS=:7000);
// and sets, "key=value" strings as given to --set (log.level=debug,
// listeners.tcp.heartbeat.idle_timeout=30s). The result is validated.
// A TETHER_* variable that names no key is not an error but one of the
// result's Warnings, for the caller to log.
func Load(path string, env, sets []string) (*Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if cfg, err = Parse(data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := cfg.applyEnv(env); err != nil {
		return nil, err
	}
	for _, kv := range sets {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want key=value", kv)
		}
		if err := cfg.Set(key, value); err != nil {
			return nil, fmt.Errorf("--set %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse reads a YAML document over the defaults. Unknown keys, duplicate
// keys and values of the wrong type are errors naming the key and line.
// Parse does not validate; Load does.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 { // an empty file: the defaults
		return cfg, nil
	}
	if err := decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), ""); err != nil {
		return nil, err
	}
	return cfg, nil
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	listenerType    = reflect.TypeFor[Listener]()
	namespaceType   = reflect.TypeFor[Namespace]()
)

// namedLists are the lists whose items are addressed by a name in keys
// (listeners.tcp.address, rooms.namespaces.news.history_size): the
// field of an item that names it.
var namedLists = map[reflect.Type]string{listenerType: "name", namespaceType: "prefix"}

// decode writes node into v, which already holds defaults, so keys the
// file leaves out keep them. It is strict where yaml.v3 is not: yaml.v3
// forgets KnownFields inside nested decoders, and its errors name a Go
// type rather than the key the user wrote.
func decode(node *yaml.Node, v reflect.Value, key string) error {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("line %d: %w", node.Line, keyErr(key, format, args...))
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) {
		if node.Kind != yaml.ScalarNode {
			return fail("want a single value, got a %s", kindName(node.Kind))
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(node.Value)); err != nil {
			return fail("%v", err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			return fail("want a mapping of keys, got a %s", kindName(node.Kind))
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, val := node.Content[i].Value, node.Content[i+1]
			sub := joinKey(key, k)
			if seen[k] {
				return fmt.Errorf("line %d: %w", node.Content[i].Line, keyErr(sub, "duplicate key"))
			}
			seen[k] = true
			f, ok := fieldByTag(v, k)
			if !ok {
				f, ok = renamedField(v, key, k)
			}
			if !ok {
				return fmt.Errorf("line %d: %w", node.Content[i].Line, keyErr(sub, "unknown key%s", suggest(k, tags(v.Type()))))
			}
			if err := decode(val, f, sub); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return fail("want a list, got a %s", kindName(node.Kind))
		}
		if len(node.Content) == 0 { // [] and an absent list mean the same
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		out := reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content))
		for i, item := range node.Content {
			elem := out.Index(i)
			itemKey := fmt.Sprintf("%s[%d]", key, i)
			switch v.Type().Elem() {
			case listenerType:
				// A listener starts from the defaults of its protocol, so
				// the protocol must be known before the rest is decoded.
				elem.Set(reflect.ValueOf(DefaultListener(scalarField(item, "protocol"))))
			case namespaceType:
				elem.Set(reflect.ValueOf(Namespace{RoomOptions: DefaultRoomOptions()}))
			}
			if field, ok := namedLists[v.Type().Elem()]; ok {
				if name := scalarField(item, field); name != "" {
					itemKey = key + "." + name
				}
			}
			if err := decode(item, elem, itemKey); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case reflect.String, reflect.Int, reflect.Bool:
		if node.Kind != yaml.ScalarNode {
			return fail("want a single value, got a %s", kindName(node.Kind))
		}
		if err := node.Decode(v.Addr().Interface()); err != nil {
			return fail("want %s, got %q", kindWord(v.Kind()), node.Value)
		}
		return nil
	}
	return fail("unsupported field type %s", v.Type()) // a programming error in Config
}

// renamed maps keys that moved to where they are now; the old names are
// still read, in files, --set and the environment.
var renamed = map[string]string{"shutdown_timeout": "shutdown.timeout"}

// renamedField is the field that the old key k under parent (a struct
// value v) now names.
func renamedField(v reflect.Value, parent, k string) (reflect.Value, bool) {
	now, ok := renamed[joinKey(parent, k)]
	if !ok {
		return reflect.Value{}, false
	}
	if parent != "" {
		now = strings.TrimPrefix(now, parent+".")
	}
	for _, part := range strings.Split(now, ".") {
		if v, ok = fieldByTag(v, part); !ok {
			return reflect.Value{}, false
		}
	}
	return v, true
}

// scalarField returns the value of key in a mapping node, or "".
func scalarField(node *yaml.Node, key string) string {
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	if node.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value == key && node.Content[i+1].Kind == yaml.ScalarNode {
			return node.Content[i+1].Value
		}
	}
	return ""
}

// inline is the tag of a struct field whose keys are its parent's.
const inline = ",inline"

// keyTag is the yaml tag of a field; ok is false for the fields that are
// no key (unexported: what Load found along the way, say).
func keyTag(f reflect.StructField) (tag string, ok bool) {
	return f.Tag.Get("yaml"), f.IsExported()
}

func fieldByTag(v reflect.Value, tag string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		ft, ok := keyTag(t.Field(i))
		if !ok {
			continue
		}
		switch ft {
		case tag:
			return v.Field(i), true
		case inline:
			if f, ok := fieldByTag(v.Field(i), tag); ok {
				return f, true
			}
		}
	}
	return reflect.Value{}, false
}

func tags(t reflect.Type) []string {
	out := make([]string, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		tag, ok := keyTag(t.Field(i))
		switch {
		case !ok:
		case tag == inline:
			out = append(out, tags(t.Field(i).Type)...)
		default:
			out = append(out, tag)
		}
	}
	return out
}

// namedList says whether v is a list of named items, and which field of
// an item names it.
func namedList(v reflect.Value) (string, bool) {
	if v.Kind() != reflect.Slice {
		return "", false
	}
	field, ok := namedLists[v.Type().Elem()]
	return field, ok
}

// fieldName is the Go name of the field of t tagged tag.
func fieldName(t reflect.Type, tag string) string {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("yaml") == tag {
			return t.Field(i).Name
		}
	}
	return ""
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "single value"
	}
}

func kindWord(k reflect.Kind) string {
	switch k {
	case reflect.Int:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	default:
		return "a string"
	}
}

// suggest names the closest known key when a typo is likely, else every
// known key.
func suggest(k string, known []string) string {
	if best := closest(k, known); best != "" {
		return fmt.Sprintf("; did you mean %s?", best)
	}
	return fmt.Sprintf(" (known: %s)", strings.Join(known, ", "))
}

// closest is the known key k is a likely typo of, or "".
func closest(k string, known []string) string {
	best, bestDist := "", 3 // more than two edits away is not a typo
	for _, c := range known {
		if d := editDistance(k, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Keys lists every key of c that Set accepts, with listeners and
// namespaces named by their name (listeners.tcp.address,
// rooms.namespaces.news.history_size), sorted.
func (c *Config) Keys() []string {
	var keys []string
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		if v.Kind() == reflect.Struct && !v.Addr().Type().Implements(textUnmarshaler) {
			for i := 0; i < v.NumField(); i++ {
				tag, ok := keyTag(v.Type().Field(i))
				if !ok {
					continue
				}
				if tag == inline {
					walk(v.Field(i), key)
				} else {
					walk(v.Field(i), joinKey(key, tag))
				}
			}
			return
		}
		if field, ok := namedList(v); ok {
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), key+"."+v.Index(i).FieldByName(fieldName(v.Type().Elem(), field)).String())
			}
			return
		}
		keys = append(keys, key)
	}
	walk(reflect.ValueOf(c).Elem(), "")
	sort.Strings(keys)
	return keys
}

// Set sets one key from its string form: a duration as 10s, a size as
// 2MiB, a list as comma separated values. Listeners are addressed by name.
func (c *Config) Set(key, value string) error {
	if now, ok := renamed[key]; ok {
		key = now
	}
	v := reflect.ValueOf(c).Elem()
	parts := strings.Split(key, ".")
	for i := 0; i < len(parts); i++ {
		if v.Kind() != reflect.Struct {
			return keyErr(key, "no such key")
		}
		f, ok := fieldByTag(v, parts[i])
		if !ok {
			return keyErr(key, "no such key%s", suggest(parts[i], tags(v.Type())))
		}
		v = f
		if field, ok := namedList(v); ok {
			if i+1 >= len(parts) {
				return keyErr(key, "name an item and a key, e.g. listeners.tcp.address")
			}
			item, found := reflect.Value{}, false
			for j := 0; j < v.Len(); j++ {
				if v.Index(j).FieldByName(fieldName(v.Type().Elem(), field)).String() == parts[i+1] {
					item, found = v.Index(j), true
				}
			}
			if !found {
				return keyErr(key, "no %s named %q", strings.TrimSuffix(parts[i], "s"), parts[i+1])
			}
			v = item
			i++
		}
	}
	if err := setScalar(v, value); err != nil {
		return keyErr(key, "%v", err)
	}
	return nil
}

func setScalar(v reflect.Value, value string) error {
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) {
		return v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(value))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(value)
	case reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("want a whole number, got %q", value)
		}
		v.SetInt(int64(n))
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", value)
		}
		v.SetBool(b)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("cannot be set from a string; use the file")
		}
		var items []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return errors.New("cannot be set from a string; use the file")
	}
	return nil
}

// EnvName is the environment variable that sets key: TETHER_ and the key
// in upper case with dots and dashes as underscores.
func EnvName(key string) string {
	return EnvPrefix + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(key))
}

// applyEnv applies every TETHER_* entry of env that names a key. One
// that names none is left alone: the prefix is not tether's alone
// (TETHER_HOME of a wrapper script, of another program), so it is a
// warning, which names the closest key when it looks like a typo of one.
// A value a key does not take is an error.
func (c *Config) applyEnv(env []string) error {
	var byName map[string]string
	var names []string
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || name == EnvPrefix+"CONFIG" {
			continue
		}
		if byName == nil {
			byName = map[string]string{}
			for _, k := range c.Keys() {
				byName[EnvName(k)] = k
				names = append(names, EnvName(k))
			}
		}
		key, ok := byName[name]
		if !ok {
			warning := fmt.Sprintf("environment %s: not a configuration key; ignored", name)
			if near := closest(name, names); near != "" {
				warning = fmt.Sprintf("environment %s: no such key, ignored; did you mean %s?", name, near)
			}
			c.warnings = append(c.warnings, warning)
			continue
		}
		if err := c.Set(key, value); err != nil {
			return fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return nil
}
