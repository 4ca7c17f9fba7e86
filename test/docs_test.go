package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeImagesAreInTheRepository: every picture README.md shows is a
// file git keeps, so that it shows on a fresh clone (the chat page's was
// under test/artifacts/, which git ignores, and existed only after the
// browser test had run).
func TestReadmeImagesAreInTheRepository(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`!\[[^\]]*\]\(([^)\s]+)\)`).FindAllStringSubmatch(string(readme), -1)
	if len(images) == 0 {
		t.Fatal("README shows no picture")
	}
	for _, m := range images {
		path := m[1]
		if strings.Contains(path, "://") {
			t.Errorf("%s: a picture from elsewhere, not the repository", path)
			continue
		}
		if _, err := os.Stat(filepath.Join("..", path)); err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		// check-ignore exits 0 for an ignored path, 1 for a kept one, and
		// 128 outside a git work tree (a source tarball), which keeps
		// whatever it holds.
		err := exec.Command("git", "-C", "..", "check-ignore", "-q", path).Run()
		var exit *exec.ExitError
		if err == nil {
			t.Errorf("%s: git ignores it", path)
		} else if !errors.As(err, &exit) || (exit.ExitCode() != 1 && exit.ExitCode() != 128) {
			t.Errorf("git check-ignore %s: %v", path, err)
		}
	}
}
