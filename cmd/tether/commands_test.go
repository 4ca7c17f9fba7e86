package main

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestCommandTable: every command of the table is well declared: a
// unique name, a short help, a group tether --help knows, flags that its
// flag groups name, no flag declared twice.
func TestCommandTable(t *testing.T) {
	groupIDs := map[string]bool{"": true}
	for _, g := range groups {
		groupIDs[g.ID] = true
	}
	var walk func(path string, cs []command)
	walk = func(path string, cs []command) {
		seen := map[string]bool{}
		for _, c := range cs {
			name := path + " " + c.name
			if seen[c.name] {
				t.Errorf("%s: declared twice", name)
			}
			seen[c.name] = true
			if c.short == "" {
				t.Errorf("%s: no short help", name)
			}
			if !groupIDs[c.group] {
				t.Errorf("%s: unknown group %q", name, c.group)
			}
			if (c.run == nil) == (len(c.subs) == 0) {
				t.Errorf("%s: wants either a function or subcommands", name)
			}
			flags := map[string]bool{}
			defs := c.flags
			if c.config {
				defs = append(slices.Clone(configFlags), defs...)
			}
			for _, d := range defs {
				if flags[d.name] {
					t.Errorf("%s: flag --%s declared twice", name, d.name)
				}
				flags[d.name] = true
			}
			for _, g := range append(append(slices.Clone(c.exclusive), c.oneRequired...), c.required) {
				for _, f := range g {
					if !flags[f] {
						t.Errorf("%s: a flag group names --%s, which it does not declare", name, f)
					}
				}
			}
			walk(name, c.subs)
		}
	}
	walk("tether", commands)
}

// TestHelpListsCommandsByGroup: tether --help lists the node's commands,
// the cluster's and the test tools under their own headings, in the
// table's order, and hides the bench's internals.
func TestHelpListsCommandsByGroup(t *testing.T) {
	root := rootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	sections := map[string][]string{}
	heading := ""
	for _, line := range strings.Split(help, "\n") {
		if strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " ") {
			heading = line
			continue
		}
		if m := regexp.MustCompile(`^  (\S+) `).FindStringSubmatch(line); m != nil && heading != "" {
			sections[heading] = append(sections[heading], m[1])
		}
	}
	for _, g := range groups {
		var want []string
		for _, c := range commands {
			if c.group == g.ID {
				want = append(want, c.name)
			}
		}
		if got := sections[g.Title]; !slices.Equal(got, want) {
			t.Errorf("%s lists %v, want %v:\n%s", g.Title, got, want, help)
		}
	}
	if !slices.Contains(sections["Additional Commands:"], "version") {
		t.Errorf("version is not listed:\n%s", help)
	}

	bench, _, err := root.Find([]string{"bench"})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	root.SetArgs([]string{"bench", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, hidden := range []string{"worker", "floor"} {
		if strings.Contains(out.String(), "  "+hidden+" ") {
			t.Errorf("bench --help shows %s:\n%s", hidden, out.String())
		}
	}
	if !slices.ContainsFunc(bench.Commands(), func(c *cobra.Command) bool { return c.Name() == "worker" && c.Hidden }) {
		t.Error("bench has no hidden worker command")
	}
}

// TestSharedFlagsDeclaredOnce: the commands that read the configuration
// have -c/--config and --set, with the same help everywhere.
func TestSharedFlagsDeclaredOnce(t *testing.T) {
	root := rootCommand()
	for _, args := range [][]string{{"serve"}, {"status"}, {"push"}, {"token"}} {
		c, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		f := c.Flags().Lookup("config")
		if f == nil || f.Shorthand != "c" || f.Usage != configFlags[0].usage {
			t.Errorf("%v: --config %+v", args, f)
		}
		if c.Flags().Lookup("set") == nil {
			t.Errorf("%v: no --set", args)
		}
	}
	if c, _, _ := root.Find([]string{"version"}); c.Flags().Lookup("config") != nil {
		t.Error("version takes --config")
	}
}
