package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lineamica/centralino/modules/faq"
)

const faqUsage = `usage: centralino faq [--api URL] [--agency CODE] [--user NAME] COMMAND FILE

commands:
  check FILE    read a FAQ file (.yaml, .yml, .json or .csv) and report its errors, by line
  import FILE   send it to a running switch's POST /api/faq/import, as the agency

--api is the switch's HTTP address (default http://127.0.0.1:8080); --agency is sent as X-Agency
(default lineamica, the network centre), --user as X-User. See docs/faq.md.
`

// faqCmd checks a FAQ file offline, or imports it through a running switch:
// the entries live in the switch's store, so the API is the one way in.
func faqCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("faq", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, faqUsage) }
	api := fs.String("api", "http://127.0.0.1:8080", "the switch's HTTP address")
	agency := fs.String("agency", "lineamica", "IPA code of the agency importing")
	user := fs.String("user", "", "username of who imports")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 || (fs.Arg(0) != "check" && fs.Arg(0) != "import") {
		fmt.Fprint(stdout, faqUsage)
		return errors.New("faq: want check FILE or import FILE")
	}
	file := fs.Arg(1)
	format := faq.FormatOf(file)
	if format == "" {
		return fmt.Errorf("faq: %s: name it .yaml, .yml, .json or .csv", file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("faq: %w", err)
	}
	if fs.Arg(0) == "check" {
		n, err := faq.Check(format, data)
		if err != nil {
			return fmt.Errorf("faq: %s:\n%w", file, err)
		}
		fmt.Fprintf(stdout, "%s: ok (%d entries)\n", file, n)
		return nil
	}

	req, err := http.NewRequest("POST", strings.TrimSuffix(*api, "/")+"/api/faq/import?format="+url.QueryEscape(format), bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("faq: --api: %w", err)
	}
	req.Header.Set("X-Agency", *agency)
	if *user != "" {
		req.Header.Set("X-User", *user)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("faq: %w", err)
	}
	defer resp.Body.Close()
	var answer struct {
		Created, Updated, Unchanged int
		Error                       string
		Errors                      []string
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("faq: %s answered %s", *api, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("faq: %s: %s\n%s", file, answer.Error, strings.Join(answer.Errors, "\n"))
	}
	fmt.Fprintf(stdout, "%s: %d created, %d updated, %d unchanged\n", file, answer.Created, answer.Updated, answer.Unchanged)
	return nil
}
