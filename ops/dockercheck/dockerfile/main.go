// Command dockerfile checks a Dockerfile as far as a machine without Docker or a registry allows,
// with BuildKit's own frontend: the file is parsed and converted to a build graph exactly as
// `docker build --check` does (every lint rule that is on by default), and every COPY or ADD
// source must exist in the build context and not be excluded by its .dockerignore.
//
// Usage: dockerfile CONTEXT_DIR [DOCKERFILE]
//
// It prints what the build does as JSON (for the tests to assert on) and exits 1 with the
// frontend's or the context's message when the build would fail. The base images cannot be
// pulled here: a stub answers for them with an empty configuration, so nothing about their
// contents is checked.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Step is one instruction of a stage, as the tests read it.
type Step struct {
	Line    int      `json:"line"`
	Name    string   `json:"name"`
	Sources []string `json:"sources,omitempty"`
	Dest    string   `json:"dest,omitempty"`
	From    string   `json:"from,omitempty"`
	Command []string `json:"command,omitempty"`
	Shell   bool     `json:"shell,omitempty"`
	Value   string   `json:"value,omitempty"`
}

// Stage is one FROM and what follows it.
type Stage struct {
	Base  string `json:"base"`
	Name  string `json:"name,omitempty"`
	Steps []Step `json:"steps"`
}

// stubImages answers for base images that cannot be pulled: an empty configuration.
type stubImages struct{}

func (stubImages) ResolveImageConfig(
	_ context.Context, ref string, _ sourceresolver.Opt,
) (string, digest.Digest, []byte, error) {
	config, err := json.Marshal(ocispecs.Image{
		Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		RootFS:   ocispecs.RootFS{Type: "layers"},
	})
	return ref, digest.FromBytes(config), config, err
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fail(errors.New("usage: dockerfile CONTEXT_DIR [DOCKERFILE]"))
	}
	contextDir := os.Args[1]
	dockerfile := filepath.Join(contextDir, "Dockerfile")
	if len(os.Args) == 3 {
		dockerfile = os.Args[2]
	}
	source, err := os.ReadFile(dockerfile)
	if err != nil {
		fail(err)
	}
	if err := lint(source, dockerfile); err != nil {
		fail(err)
	}
	stages, err := describe(source)
	if err != nil {
		fail(fmt.Errorf("%s: %w", dockerfile, err))
	}
	if err := checkSources(stages, contextDir); err != nil {
		fail(fmt.Errorf("%s: %w", dockerfile, err))
	}
	out, err := json.MarshalIndent(stages, "", "  ")
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// lint converts the Dockerfile to a build graph as `docker build --check` does: a conversion
// error or any warning of the default rules fails.
func lint(source []byte, name string) error {
	ctx := context.Background()
	// The Dockerfile as the frontend receives it: a file of a local source, as `docker build` sends it.
	def, err := llb.Local("dockerfile").Marshal(ctx)
	if err != nil {
		return err
	}
	results, err := dockerfile2llb.DockerfileLint(ctx, source, dockerfile2llb.ConvertOpt{
		SourceMap:    &llb.SourceMap{Filename: name, Language: "Dockerfile", Data: source, Definition: def},
		MetaResolver: stubImages{},
	})
	if err != nil {
		return err
	}
	var problems []string
	if results.Error != nil {
		problems = append(problems, fmt.Sprintf("%s: %s", name, results.Error.Message))
	}
	for _, w := range results.Warnings {
		line := int32(0)
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = w.Location.Ranges[0].Start.Line
		}
		problems = append(problems, fmt.Sprintf("%s:%d: %s: %s (%s)", name, line, w.RuleName, w.Detail, w.URL))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// describe lists the stages and their instructions, as parsed by the frontend.
func describe(source []byte) ([]Stage, error) {
	ast, err := parser.Parse(bytes.NewReader(source))
	if err != nil {
		return nil, err
	}
	parsed, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return nil, err
	}
	stages := make([]Stage, 0, len(parsed))
	for _, st := range parsed {
		stage := Stage{Base: st.BaseName, Name: st.Name, Steps: []Step{}}
		for _, cmd := range st.Commands {
			stage.Steps = append(stage.Steps, step(cmd))
		}
		stages = append(stages, stage)
	}
	return stages, nil
}

func step(cmd instructions.Command) Step {
	s := Step{Name: strings.ToLower(cmd.Name())}
	if located, ok := cmd.(interface{ Location() []parser.Range }); ok && len(located.Location()) > 0 {
		s.Line = located.Location()[0].Start.Line
	}
	switch c := cmd.(type) {
	case *instructions.CopyCommand:
		s.Sources, s.Dest, s.From = c.SourcePaths, c.DestPath, c.From
	case *instructions.AddCommand:
		s.Sources, s.Dest = c.SourcePaths, c.DestPath
	case *instructions.RunCommand:
		s.Command, s.Shell = c.CmdLine, c.PrependShell
	case *instructions.CmdCommand:
		s.Command, s.Shell = c.CmdLine, c.PrependShell
	case *instructions.EntrypointCommand:
		s.Command, s.Shell = c.CmdLine, c.PrependShell
	case *instructions.UserCommand:
		s.Value = c.User
	case *instructions.WorkdirCommand:
		s.Value = c.Path
	case *instructions.EnvCommand:
		pairs := make([]string, 0, len(c.Env))
		for _, kv := range c.Env {
			pairs = append(pairs, kv.String())
		}
		s.Value = strings.Join(pairs, " ")
	}
	return s
}

// checkSources refuses a COPY or ADD from the context whose source is missing or excluded by
// .dockerignore: the build would stop there.
func checkSources(stages []Stage, contextDir string) error {
	ignored, err := ignoreMatcher(contextDir)
	if err != nil {
		return err
	}
	for _, stage := range stages {
		for _, s := range stage.Steps {
			if (s.Name != "copy" && s.Name != "add") || s.From != "" {
				continue
			}
			for _, src := range s.Sources {
				if strings.Contains(src, "://") {
					continue // ADD of a URL: fetched at build time, not from the context
				}
				if err := checkSource(contextDir, src, ignored); err != nil {
					return fmt.Errorf("line %d: %s %s: %w", s.Line, strings.ToUpper(s.Name), src, err)
				}
			}
		}
	}
	return nil
}

func checkSource(contextDir, src string, ignored *patternmatcher.PatternMatcher) error {
	rel := filepath.Clean(strings.TrimPrefix(src, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return errors.New("is outside the build context")
	}
	matches, err := filepath.Glob(filepath.Join(contextDir, rel))
	if err != nil {
		return err
	}
	if len(matches) == 0 {
		return errors.New("not found in the build context")
	}
	if ignored == nil {
		return nil
	}
	for _, m := range matches {
		inside, err := filepath.Rel(contextDir, m)
		if err != nil {
			return err
		}
		if excluded, err := ignored.MatchesOrParentMatches(filepath.ToSlash(inside)); err != nil {
			return err
		} else if excluded {
			return errors.New("is excluded by .dockerignore")
		}
	}
	return nil
}

func ignoreMatcher(contextDir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(contextDir, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return patternmatcher.New(patterns)
}
