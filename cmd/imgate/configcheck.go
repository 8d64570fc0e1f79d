package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"imgate/gateway"
)

// runConfig is `imgate config check FILE`: it loads the file the way
// `imgate all|gateway --config FILE` would, then checks every value, and
// prints one "file:line: field: problem" line per problem. It exits 0 only
// when there is none.
func runConfig(args []string) error {
	if len(args) != 2 || args[0] != "check" {
		return errors.New("usage: imgate config check FILE")
	}
	problems := checkConfigFile(args[1])
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %d problem(s)", args[1], len(problems))
	}
	fmt.Printf("%s: ok\n", args[1])
	return nil
}

// checkConfigFile returns the problems of a config file, each prefixed with
// file:line where the line is known.
func checkConfigFile(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var f fileConfig
	dec := toml.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return decodeProblems(path, err)
	}
	cfg := gateway.DefaultConfig()
	if err := loadFile(path, &cfg); err != nil {
		return []string{err.Error()}
	}
	var out []string
	at := func(field string) string {
		if line := lineOf(string(data), field); line > 0 {
			return fmt.Sprintf("%s:%d: %s", path, line, field)
		}
		return fmt.Sprintf("%s: %s", path, field)
	}
	for _, fe := range cfg.Validate() {
		out = append(out, at(fe.Field)+": "+fe.Msg)
	}
	if f.LogLevel != nil {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*f.LogLevel)); err != nil {
			out = append(out, at("log_level")+fmt.Sprintf(": %q: want debug, info, warn or error", *f.LogLevel))
		}
	}
	if f.LogFormat != nil && *f.LogFormat != "text" && *f.LogFormat != "json" {
		out = append(out, at("log_format")+fmt.Sprintf(": %q: want text or json", *f.LogFormat))
	}
	// [dns]: the region table always (every cluster gateway serves HTTPDNS
	// from it); the responder's settings when the file means to run it.
	dc := defaultDNSConfig()
	f.DNS.apply(&dc)
	for _, fe := range dc.Validate(dc.Enabled || f.DNS.Zone != nil || f.DNS.Listen != nil) {
		out = append(out, at(fe.Field)+": "+fe.Msg)
	}
	return out
}

// decodeProblems turns the TOML decoder's errors (syntax, unknown keys,
// types, bad durations) into file:line:column lines.
func decodeProblems(path string, err error) []string {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var out []string
		for _, e := range strict.Errors {
			row, col := e.Position()
			out = append(out, fmt.Sprintf("%s:%d:%d: %s: unknown setting", path, row, col, strings.Join(e.Key(), ".")))
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if key := strings.Join(de.Key(), "."); key != "" {
			msg = key + ": " + msg
		}
		return []string{fmt.Sprintf("%s:%d:%d: %s", path, row, col, msg)}
	}
	return []string{fmt.Sprintf("%s: %v", path, err)}
}

var indexed = regexp.MustCompile(`^(.*)\[(\d+)\]$`)

// lineOf finds the line that sets field ("max_frame", "transport.max_frame",
// "listen[1]", "auth.keys[0]") in TOML text: the key's line inside its
// table, or for an array of tables the header of the element. 0: not found
// (the value is a default).
func lineOf(text, field string) int {
	index := -1
	if m := indexed.FindStringSubmatch(field); m != nil {
		field = m[1]
		index, _ = strconv.Atoi(m[2])
	}
	table, key := "", field
	if i := strings.LastIndex(field, "."); i >= 0 {
		table, key = field[:i], field[i+1:]
	}
	current, seen := "", 0
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "[["):
			current = strings.TrimSpace(strings.Trim(line, "[] "))
			if current == field && index >= 0 {
				if seen == index {
					return n + 1
				}
				seen++
			}
		case strings.HasPrefix(line, "["):
			current = strings.TrimSpace(strings.Trim(line, "[] "))
		case current == table:
			if k, _, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
				return n + 1
			}
		}
	}
	return 0
}
